"""psim-synth resumes after a kill (issue 22, section 1): the images and every finished subject are kept,
the rest is made, and the result is the same dataset an uninterrupted run writes."""
import hashlib
import json

import pytest

import prosthesis_sim.data.synth as synth_module
from prosthesis_sim.data.synth import is_complete, synthesize

SIZES = dict(n_subjects=2, n_train_concepts=5, images_per_concept=2, n_test=4, train_reps=2, test_reps=3,
             image_size=40, seed=1, progress=False)


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "synth.json"}


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    fresh = synthesize(tmp_path / "fresh", **SIZES)
    real = synth_module._simulate_split
    calls = []

    def killed_on_subject_2(seed, s, *args, **kwargs):
        calls.append(s)
        if s == 1:
            raise KeyboardInterrupt  # as Ctrl-C or a kill during the second subject
        return real(seed, s, *args, **kwargs)

    monkeypatch.setattr(synth_module, "_simulate_split", killed_on_subject_2)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, **SIZES)
    record = json.loads((out / "synth.json").read_text())
    assert not is_complete(out) and record["done"] == {"images": True, "subjects": [1]}
    kept = {p: p.stat().st_mtime_ns for p in [*(out / "sub-01").iterdir(), *(out / "images").rglob("*.jpg")]}

    monkeypatch.setattr(synth_module, "_simulate_split", real)
    calls.clear()
    synthesize(out, **SIZES)
    assert is_complete(out)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the first subject and the images were not redone
    assert digest(out) == digest(fresh)  # and the dataset is the one an uninterrupted run writes
    assert not (out / synth_module.INPUTS_FILE).exists()
    # other arguments start afresh (the folder is ours, so it is cleaned, not refused)
    synthesize(out, **{**SIZES, "n_test": 3})
    assert json.loads((out / "synth.json").read_text())["args"]["n_test"] == 3
