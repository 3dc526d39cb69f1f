"""psim-report: saved psim-train runs (ridge and mean_erp, two subjects) -> report.md, CSVs, topography PNGs."""
import csv
import shutil

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from prosthesis_sim import report as report_module
from prosthesis_sim.report import runs as report_runs
from prosthesis_sim.report import scoring as report_scoring
from prosthesis_sim.report import METRICS, build_report, report_main

pytestmark = pytest.mark.slow  # trains models: make test-fast leaves this module out

RUNS = [("ridge", 1), ("ridge", 2), ("mean_erp", 1), ("mean_erp", 2)]
COMPARED = ("mse", "pcc", "pcc_channel", "top1", "top5")


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """psim-train's own code path (train_and_evaluate) for every (encoder, subject); returns the run folders."""
    from prosthesis_sim.pipeline import train_and_evaluate

    base = tmp_path_factory.mktemp("runs")
    for encoder, subject in RUNS:
        out = base / f"{encoder}-s{subject}"
        with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
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


def test_across_image_r_maps_and_ceilings(built, metrics):
    import matplotlib.image

    out, md = built
    assert "### Across-image r" in md
    for subject in ("sub-01", "sub-02"):
        name = f"across_image_r_{subject}.png"
        assert f"]({name})" in md
        img = matplotlib.image.imread(out / name)[..., :3]
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # channel x time maps, not a blank canvas
    ceilings = [metrics[("ridge", s)]["noise_ceiling"]["r_across_images_ceiling"] for s in (1, 2)]
    rows = table(md, "Pearson r across images, mean over channels x time")
    assert rows["noise ceiling"] == [f"{v:.3f}" for v in [*ceilings, np.mean(ceilings)]]
    # the shared response cannot help here: the mean-ERP floor is at 0, ridge above it
    for s in (1, 2):
        assert metrics[("mean_erp", s)]["mean_erp"]["r_across_images"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[("ridge", s)]["encoder"]["r_across_images"] > 0.05


def test_report_states_definitions_and_commands(built, runs, synth_root):
    _, md = built
    assert "evaluation.md#metrics" in md and "Pearson r" in md
    assert f"psim-train encoder=ridge dataset.root={synth_root} dataset.subject=2 out={runs / 'ridge-s2'}" in md


def test_rebuild_reads_the_cache_and_report_main_composes(built, runs, tmp_path, monkeypatch):
    """psim-report's path (Hydra already initialised, runs given as their parent folder) on a copy of the
    report folder: the cached evaluations are reused, so no encoder or dataset is loaded again."""
    out, md = built
    shutil.copytree(out, tmp_path / "report")

    def refuse(*args, **kwargs):
        raise AssertionError("a cached evaluation was recomputed")

    monkeypatch.setattr(report_scoring, "load_component", refuse)
    monkeypatch.setattr(report_scoring, "load_dataset", refuse)
    report_runs._configs.cache_clear()
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("report", overrides=[f"runs=[{runs}]", f"out={tmp_path / 'report'}"])
        assert cfg.seed is None
        path = report_main(cfg)
    again = path.read_text()
    section = "\n## THINGS-EEG2"  # everything but the command and the relative README link
    assert again[again.index(section):] == md[md.index(section):]
    assert f"psim-report runs=[{runs}]" in again


# --- datasets from metrics.json (MEG), conditioning ablation, samplers --------------------------------

def _train(out, *overrides):
    from prosthesis_sim.pipeline import train_and_evaluate

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"out={out}", "train.checkpoint_dir=null"])
    train_and_evaluate(cfg, out)
    return out


@pytest.fixture(scope="module")
def meg_runs(tmp_path_factory):
    """ridge on both subjects of a tiny synthetic THINGS-MEG set (dataset=things_meg)."""
    from prosthesis_sim.data.synth import synthesize

    base = tmp_path_factory.mktemp("meg")
    root = synthesize(base / "data", n_subjects=2, n_train_concepts=6, images_per_concept=2, n_test=8,
                      train_reps=1, test_reps=4, image_size=32, seed=0, progress=False, modality="meg")
    return root, [_train(base / f"ridge-meg-s{s}", "encoder=ridge", "dataset=things_meg", f"dataset.root={root}",
                         f"dataset.subject={s}") for s in (1, 2)]


def test_meg_runs_get_their_own_section(runs, meg_runs, tmp_path):
    import json
    import matplotlib.image

    root, (meg1, meg2) = meg_runs
    out = tmp_path / "report"
    md = build_report([meg1, runs / "ridge-s1", meg2], out).read_text()  # MEG given first: EEG still leads
    eeg_at, meg_at = md.index("\n## THINGS-EEG2"), md.index("\n## THINGS-MEG")
    assert eeg_at < meg_at and md.count("\n## THINGS-") == 2
    meg = md[meg_at:md.index("\n## Runs")]
    m = [json.loads((r / "metrics.json").read_text())["encoder"] for r in (meg1, meg2)]
    assert table(meg, METRICS["pcc"])["ridge"] == [f"{v:.3f}" for v in (m[0]["pcc"], m[1]["pcc"], np.mean(
        [m[0]["pcc"], m[1]["pcc"]]))]
    assert "The diagonal reproduces the runs' metrics.json" in meg  # loaded with the recorded dataset_config
    assert "No encoder has runs on several subjects." in md[eeg_at:meg_at]
    cross = [r for r in read_csv(out / "cross_subject.csv") if r["dataset"] == str(root)]
    assert len(cross) == 4
    pngs = sorted(p.name for p in out.glob("topomaps_*.png"))
    assert len(pngs) == 3 and all(f"]({p})" in md for p in pngs)
    meg_png = next(p for p in pngs if p.endswith("sub-02.png") and "data-" in p)
    img = matplotlib.image.imread(out / meg_png)[..., :3]
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000
    assert f"psim-train encoder=ridge dataset=things_meg dataset.root={root} dataset.subject=2" in md


TINY_DIT = ["encoder=dit", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "encoder.n_samples=1",
            "encoder.sampling_steps=2", "train.epochs=1", "dataset.subject=1"]
VARIANTS = {"default (cross + adaln, token sequence)": [],
            "addition": ["encoder.denoiser.conditioning=[add]"],
            "cross-attention (pooled token)": ["encoder.denoiser.conditioning=[cross]", "encoder.inputs=pooled"]}


@pytest.fixture(scope="module")
def ablation(synth_root, tmp_path_factory):
    """Tiny DiT runs that differ only in conditioning, reported with a sampler sweep."""
    base = tmp_path_factory.mktemp("ablation")
    dirs = [_train(base / f"dit-{i}", *TINY_DIT, *extra, f"dataset.root={synth_root}")
            for i, extra in enumerate(VARIANTS.values())]
    out = base / "report"
    md = build_report(dirs, out, samplers=["ddim", "dpmsolver++"], sampler_steps=[2, 3]).read_text()
    return dirs, out, md


def test_conditioning_ablation_table(ablation):
    import json

    dirs, out, md = ablation
    block = md.split("### Conditioning ablation", 1)[1].split("\n\n")[3]
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:])}
    assert list(rows) == list(VARIANTS)
    for label, run in zip(VARIANTS, dirs):
        m = json.loads((run / "metrics.json").read_text())["encoder"]
        assert rows[label] == [f"{m[k]:.3f}" for k in ("mse", "pcc", "top1", "top5")] + ["sub-01"]
    assert {r["conditioning"] for r in read_csv(out / "ablation.csv")} == set(VARIANTS)


def test_sampler_sweep_reproduces_the_saved_sampler_and_is_cached(ablation, monkeypatch):
    import json

    dirs, out, md = ablation
    rows = read_csv(out / "samplers.csv")
    assert len(rows) == 3 * 4 and {(r["sampler"], r["steps"]) for r in rows} == {
        (s, n) for s in ("ddim", "dpmsolver++") for n in ("2", "3")}
    for run in dirs:  # saved as ddim, 2 steps: that cell is the run's own evaluation again
        m = json.loads((run / "metrics.json").read_text())["encoder"]
        cell = next(r for r in rows if r["run"] == str(run) and (r["sampler"], r["steps"]) == ("ddim", "2"))
        for key in ("mse", "pcc", "top1", "top5"):
            assert float(cell[key]) == pytest.approx(m[key], abs=1e-6)
        assert float(cell["generate_s_per_image"]) > 0
    assert md.count("| ddim (saved) | 2 |") == 3

    def refuse(*args, **kwargs):
        raise AssertionError("a cached evaluation was recomputed")

    monkeypatch.setattr(report_scoring, "load_component", refuse)
    monkeypatch.setattr(report_scoring, "load_dataset", refuse)
    again = build_report(dirs, out, samplers=["ddim", "dpmsolver++"], sampler_steps=[2, 3]).read_text()
    assert again == md
    with pytest.raises(ValueError, match="give both or neither"):
        build_report(dirs, out, samplers=["ddim"])


@pytest.mark.parametrize("option, overrides, expected", [
    # a shrunk dit_paper differs from dit_paper in sizes and from dit in its choices: it stays dit_paper
    ("dit_paper", ["encoder.denoiser.hidden=64", "encoder.denoiser.depth=2", "encoder.denoiser.heads=4",
                   "encoder.denoiser.patch=[7,25]", "encoder.sampling_steps=25", "train.epochs=100"],
     ["encoder=dit_paper", "encoder.denoiser.hidden=64", "encoder.denoiser.depth=2", "encoder.denoiser.heads=4",
      "encoder.denoiser.patch=[7,25]", "encoder.sampling_steps=25", "train.epochs=100"]),
    ("dit", ["encoder.denoiser.conditioning=[cross]"], ["encoder=dit", "encoder.denoiser.conditioning=[cross]"]),
])
def test_saved_configs_are_described_by_their_nearest_option(option, overrides, expected):
    from omegaconf import OmegaConf

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"encoder={option}", *overrides])
    args = report_module.describe_encoder(OmegaConf.to_container(cfg.encoder, resolve=True))
    assert args[0] == expected[0] and sorted(args) == sorted(expected)
