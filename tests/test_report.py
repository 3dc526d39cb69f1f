"""psim-report: saved psim-train runs (ridge and mean_erp, two subjects) -> report.md, CSVs, topography PNGs."""
import csv
import shutil

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from prosthesis_sim import report as report_module
from prosthesis_sim.report import METRICS, build_report, report_main

RUNS = [("ridge", 1), ("ridge", 2), ("mean_erp", 1), ("mean_erp", 2)]
COMPARED = ("mse", "pcc", "pcc_channel", "top1", "top5")


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """psim-train's own code path (train_and_evaluate) for every (encoder, subject); returns the run folders."""
    from prosthesis_sim.pipeline import train_and_evaluate

    base = tmp_path_factory.mktemp("runs")
    for encoder, subject in RUNS:
        out = base / f"{encoder}-s{subject}"
        with initialize_config_module("configs", version_base="1.3"):
            cfg = compose("train", overrides=[f"encoder={encoder}", f"dataset.root={synth_root}",
                                              f"dataset.subject={subject}", f"out={out}", "train.checkpoint_dir=null"])
        train_and_evaluate(cfg, out)
    return base


@pytest.fixture(scope="module")
def metrics(runs):
    import json

    return {(e, s): json.loads((runs / f"{e}-s{s}" / "metrics.json").read_text()) for e, s in RUNS}


@pytest.fixture(scope="module")
def built(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = build_report([runs / f"{e}-s{s}" for e, s in RUNS], out)
    return out, path.read_text()


def table(md: str, title: str, paragraph: int = 1) -> dict[str, list[str]]:
    """The Markdown table that is the given paragraph after the heading '#### <title>...': first cell ->
    the other cells."""
    block = md.split(f"#### {title}", 1)[1].split("\n\n")[paragraph]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
    return {r[0]: r[1:] for r in rows[2:]}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_within_subject_tables_hold_the_runs_values(built, metrics):
    out, md = built
    for key, title in METRICS.items():
        rows = table(md, title)
        assert list(rows)[:2] == ["mean_erp", "ridge"]  # baselines first, as in the paper's tables
        for encoder, name in (("ridge", "encoder"), ("mean_erp", "mean_erp")):
            vals = [metrics[(encoder, s)][name][key] for s in (1, 2)]
            assert rows[encoder] == [f"{v:.3f}" for v in [*vals, np.mean(vals)]], (key, encoder)
    ceilings = [metrics[("ridge", s)]["noise_ceiling"]["noise_ceiling"] for s in (1, 2)]
    assert table(md, "PCC, flattened")["noise ceiling"] == [f"{v:.3f}" for v in [*ceilings, np.mean(ceilings)]]

    rows = read_csv(out / "within_subject.csv")
    assert len(rows) == 4
    for row in rows:
        run = metrics[(row["encoder"], int(row["subject"][-1]))]
        for key in METRICS:
            assert float(row[key]) == run["encoder"][key]


def test_mean_erp_is_flagged_against_ridge(built):
    _, md = built
    line = next(x for x in md.splitlines() if x.startswith("- mean_erp"))
    assert "does not beat ridge on" in line and "top1" in line and "mse" in line


def test_cross_subject_diagonal_reproduces_the_runs(built, metrics):
    out, md = built
    rows = read_csv(out / "cross_subject.csv")
    assert sorted((r["encoder"], r["source_subject"], r["target_subject"]) for r in rows) == sorted(
        (e, f"sub-0{s}", f"sub-0{t}") for e in ("ridge", "mean_erp") for s in (1, 2) for t in (1, 2))
    for r in rows:
        if r["source_subject"] == r["target_subject"]:
            run = metrics[(r["encoder"], int(r["source_subject"][-1]))]["encoder"]
            for key in COMPARED:
                assert float(r[key]) == pytest.approx(run[key], abs=1e-9), (r, key)
        else:
            assert all(np.isfinite(float(r[key])) for key in COMPARED)
    ridge = {(r["source_subject"], r["target_subject"]): r for r in rows if r["encoder"] == "ridge"}
    assert ridge[("sub-01", "sub-02")]["pcc"] != ridge[("sub-02", "sub-02")]["pcc"]  # really another subject
    # the MSE matrix (after its caption), row sub-01: diagonal, off-diagonal, row mean over the off-diagonal
    matrix = table(md, "ridge", paragraph=2)
    mse = [float(ridge[("sub-01", t)]["mse"]) for t in ("sub-01", "sub-02", "sub-02")]
    assert matrix["sub-01"][:3] == [f"{v:.3f}" for v in mse]
    assert "mean" in matrix and "std" in matrix
    assert md.count("The diagonal reproduces the runs' metrics.json") == 2


def test_topographies_are_linked_images(built):
    import matplotlib.image

    out, md = built
    for subject in ("sub-01", "sub-02"):
        name = f"topomaps_{subject}.png"
        assert f"]({name})" in md
        img = matplotlib.image.imread(out / name)[..., :3]
        assert img.shape[0] > 300 and img.shape[1] > 600
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000  # colour maps, not a blank canvas


def test_report_states_definitions_and_commands(built, runs, synth_root):
    _, md = built
    assert "README.md#metrics" in md and "Pearson r" in md
    assert f"psim-train encoder=ridge dataset.root={synth_root} dataset.subject=2 out={runs / 'ridge-s2'}" in md


def test_rebuild_reads_the_cache_and_report_main_composes(built, runs, tmp_path, monkeypatch):
    """psim-report's path (Hydra already initialised, runs given as their parent folder) on a copy of the
    report folder: the cached evaluations are reused, so no encoder or dataset is loaded again."""
    out, md = built
    shutil.copytree(out, tmp_path / "report")

    def refuse(*args, **kwargs):
        raise AssertionError("a cached evaluation was recomputed")

    monkeypatch.setattr(report_module, "load_component", refuse)
    monkeypatch.setattr(report_module, "load_things_eeg2", refuse)
    report_module._configs.cache_clear()
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("report", overrides=[f"runs=[{runs}]", f"out={tmp_path / 'report'}"])
        assert cfg.seed is None
        path = report_main(cfg)
    again = path.read_text()
    section = "\n## THINGS-EEG2"  # everything but the command and the relative README link
    assert again[again.index(section):] == md[md.index(section):]
    assert f"psim-report runs=[{runs}]" in again
