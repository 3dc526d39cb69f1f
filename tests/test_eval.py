"""psim-eval: the encoder x decoder x phosphene grid, its normalisation, caches, identification and report.

Oracle components (below) make the answers known: the oracle encoder writes each test image's index
into its signal, the oracle decoder reads it back as the exact grey image (so its percept is the
ceiling's, norm = 1) and embeds it one-hot (so identification is perfect, or exactly 1/N for a
constant signal).
"""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_module

from prosthesis_sim.encoders.mean_erp import MeanERP
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.eval import evaluate_batch
from prosthesis_sim.eval.batch import choose
from prosthesis_sim.scores import image_scores, to_grey

REQUIRED = ("encoder", "decoder", "phosphene", "pearson", "ssim", "norm_pearson", "norm_ssim", "top1", "top5",
            "chance_top1", "chance_top5", "top1_fraction_of_measured", "encode_ms_per_image",
            "decode_ms_per_image", "phosphene_ms_per_image",
            # the verdicts (issue 19's contract)
            "percept_top1", "percept_2way", "percept_2way_lo", "percept_2way_hi", "norm_pearson_lo",
            "norm_pearson_hi", "top1_lo", "top1_hi", "above_truth")
COMPARISON_COLUMNS = ("metric", "decoder", "phosphene", "encoder_a", "encoder_b", "diff", "lo", "hi")
ENCODERS = ("measured", "truth", "mean_erp", "ridge", "oracle", "half_oracle", "thumbnail_2x2", "thumbnail_4x4")
BIN = Path(sys.executable).parent
OFFSET = 1000.0  # far outside any synthetic signal's range


# --- test components (instantiated by Hydra from their _target_) ---------------------------------------

class CountingMeanERP(MeanERP):
    """The mean_erp floor, counting fits and generate() calls across instances."""

    fits = 0
    generates = 0

    def fit(self, data):
        type(self).fits += 1
        super().fit(data)

    def generate(self, images, seed=None, paths=None):
        type(self).generates += 1
        return super().generate(images, seed, paths)


class OracleEncoder:
    """Signal [0, 0] = OFFSET + the test image's index (looked up by path); everything else 0."""

    def fit(self, data):
        self.paths = [str(p) for p in data.test_images]
        self.shape = tuple(data.signal_shape)

    def generate(self, images, seed=None, paths=None):
        out = np.zeros((len(images), *self.shape), np.float32)
        out[:, 0, 0] = [OFFSET + self.paths.index(str(p)) for p in paths]
        return out

    def state(self):
        return {"shape": np.array(self.shape)}, {"paths": self.paths}

    def load_state(self, arrays, meta):
        self.shape, self.paths = tuple(int(s) for s in arrays["shape"]), meta["paths"]


class HalfOracleEncoder(OracleEncoder):
    """The oracle for the first half of the test images; for the rest the floor's signal (the mean ERP,
    which the oracle decoder reads as image 0, as it reads the floor)."""

    def fit(self, data):
        super().fit(data)
        self.floor = data.train_average().mean(axis=0)

    def generate(self, images, seed=None, paths=None):
        out = super().generate(images, seed, paths)
        half = len(self.paths) // 2
        second = [self.paths.index(str(p)) >= half for p in paths]
        out[second] = self.floor
        return out


class ScaledMeanERP(MeanERP):
    """mean_erp times ``scale``, a generation setting the fit cache ignores (like a sampler's guidance)."""

    not_fitted = ("scale",)
    fits = 0
    generates = 0

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def fit(self, data):
        type(self).fits += 1
        super().fit(data)

    def generate(self, images, seed=None, paths=None):
        type(self).generates += 1
        return self.scale * super().generate(images, seed, paths)


class OracleDecoder:
    """Reads the index from signal [0, 0] - OFFSET: decodes the exact grey test image, embeds it one-hot.

    Any other signal (measured, mean ERP: far below OFFSET) reads as image 0: a constant guess.
    """

    fits = 0

    def fit(self, data):
        type(self).fits += 1
        self.paths = [str(p) for p in data.test_images]
        self.images = np.stack([to_grey(load_image(p)) for p in data.test_images])

    def _index(self, signals):
        return np.clip(np.round(signals[:, 0, 0] - OFFSET), 0, len(self.paths) - 1).astype(int)

    def decode(self, signals):
        return self.images[self._index(signals)]

    def embed(self, signals):
        return np.eye(len(self.paths), dtype=np.float32)[self._index(signals)]

    def embed_images(self, images, paths=None):
        return np.eye(len(self.paths), dtype=np.float32)[[self.paths.index(str(p)) for p in paths]]

    def state(self):
        return {"images": self.images}, {"paths": self.paths}

    def load_state(self, arrays, meta):
        self.images, self.paths = arrays["images"], meta["paths"]


class BoxPhosphene:
    """A cheap deterministic stand-in for a phosphene model: a 12 x 16 area average."""

    def build(self):
        return self

    def __call__(self, image):
        return cv2.resize(np.clip(image, 0, 1).astype(np.float32), (16, 12), interpolation=cv2.INTER_AREA)


# --- helpers ---------------------------------------------------------------------------------------------

def compose_eval(overrides):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose("eval", overrides=overrides)


def grid_overrides(root, out, cache, dataset="things_eeg2"):
    return [f"dataset={dataset}", f"dataset.root={root}", f"out={out}", f"cache_dir={cache}",
            "encoders.mean_erp._target_=tests.test_eval.CountingMeanERP",
            "+encoders.oracle._target_=tests.test_eval.OracleEncoder",
            "+encoders.half_oracle._target_=tests.test_eval.HalfOracleEncoder",
            "+decoders.oracle._target_=tests.test_eval.OracleDecoder",
            "+phosphenes.box._target_=tests.test_eval.BoxPhosphene",
            "select.encoders=[ridge,oracle,half_oracle]", "select.decoders=[ridge_pixels,oracle]",
            "select.phosphenes=[box]", "figure.n_images=3"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(value):
    return float(value) if value != "" else math.nan


@pytest.fixture(scope="module")
def grid(synth_root, tmp_path_factory):
    """Two runs of the same grid on the same cache: (first result, second result, fits/generates of the 2nd)."""
    base = tmp_path_factory.mktemp("eval")
    CountingMeanERP.fits = CountingMeanERP.generates = OracleDecoder.fits = 0
    first = evaluate_batch(compose_eval(grid_overrides(synth_root, base / "a", base / "cache")))
    counts_first = (CountingMeanERP.fits, CountingMeanERP.generates, OracleDecoder.fits)
    CountingMeanERP.fits = CountingMeanERP.generates = OracleDecoder.fits = 0
    second = evaluate_batch(compose_eval(grid_overrides(synth_root, base / "b", base / "cache")))
    counts_second = (CountingMeanERP.fits, CountingMeanERP.generates, OracleDecoder.fits)
    return first, second, counts_first, counts_second


def by_key(rows):
    return {(r["encoder"], r["decoder"], r["phosphene"]): r for r in rows}


# --- tests -----------------------------------------------------------------------------------------------

def test_results_csv_has_every_combination_and_column(grid):
    first = grid[0]
    rows = read_rows(first.files["csv"])
    assert set(REQUIRED) <= set(rows[0])
    # measured, truth (synthetic data) and the floor are always there, plus the selection and the two
    # thumbnail bounds: 8 rows x 2 decoders x 1 phosphene
    assert [(r["encoder"], r["decoder"], r["phosphene"]) for r in rows] == [
        (e, d, "box") for d in ("ridge_pixels", "oracle") for e in ENCODERS]
    md = first.files["md"].read_text()
    assert "| ridge | ridge_pixels | box |" in md and "chance top-1 = 1/20 = 0.050" in md
    assert "### decoder `oracle`, phosphene model `box`" in md and "more decodable than the brain" in md
    for figure in ("figure", "verdicts"):
        assert first.files[figure].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparisons = read_rows(first.files["comparisons"])
    assert set(COMPARISON_COLUMNS) <= set(comparisons[0])
    pairs = {(c["metric"], c["encoder_a"], c["encoder_b"]) for c in comparisons}
    for reference in ("mean_erp", "ridge", "truth", "measured"):
        assert ("percept_2way", "oracle", reference) in pairs
    assert ("percept_2way", "measured", "mean_erp") in pairs


def test_floor_is_zero_and_ceiling_math(grid, small_data):
    rows = by_key(read_rows(grid[0].files["csv"]))
    for (enc, dec, ph), r in rows.items():
        floor = rows[("mean_erp", dec, ph)]
        for k in ("pearson", "ssim"):
            expected = (num(r[k]) - num(floor[k])) / (num(r[f"ceiling_{k}"]) - num(floor[k]))
            assert num(r[f"norm_{k}"]) == pytest.approx(expected, abs=1e-9)
        if enc == "mean_erp":
            assert num(r["norm_pearson"]) == 0 and num(r["norm_ssim"]) == 0
    # the ceiling is the image straight to the implant (here the box phosphene), scored against the image
    images = [load_image(p) for p in small_data.test_images]
    box = BoxPhosphene()
    ceiling = [image_scores(img, box(to_grey(img))) for img in images]
    assert num(rows[("ridge", "oracle", "box")]["ceiling_pearson"]) == pytest.approx(
        np.mean([s["pearson"] for s in ceiling]), abs=1e-9)
    # the oracle path sends the exact grey image to the implant: it reaches the ceiling, norm = 1
    oracle = rows[("oracle", "oracle", "box")]
    assert num(oracle["pearson"]) == pytest.approx(num(oracle["ceiling_pearson"]), abs=1e-9)
    assert num(oracle["norm_pearson"]) == pytest.approx(1.0, abs=1e-9)
    assert num(oracle["norm_ssim"]) == pytest.approx(1.0, abs=1e-9)
    # half the images at the ceiling and half at the floor: the normalised Pearson is the first half's share
    # of the ceiling's gain over the floor, per image, computed here without psim-eval (scipy's Pearson)
    from scipy.stats import pearsonr

    greys = [to_grey(img) for img in images]
    target = [cv2.resize(g, (16, 12), interpolation=cv2.INTER_AREA) for g in greys]
    c = np.array([pearsonr(t.ravel(), box(g).ravel())[0] for t, g in zip(target, greys)])
    f = np.array([pearsonr(t.ravel(), box(greys[0]).ravel())[0] for t in target])
    half = rows[("half_oracle", "oracle", "box")]
    assert num(half["norm_pearson"]) == pytest.approx((c[:10] - f[:10]).sum() / (c - f).sum(), abs=1e-5)
    assert num(half["norm_pearson_lo"]) < num(half["norm_pearson"]) < num(half["norm_pearson_hi"])
    # a real encoder and decoder sit between the floor and the ceiling, within their interval
    ridge = rows[("ridge", "ridge_pixels", "box")]
    assert num(ridge["norm_pearson_lo"]) <= num(ridge["norm_pearson"]) <= num(ridge["norm_pearson_hi"]) < 1


def test_identification_is_right_where_the_answer_is_known(grid):
    rows = by_key(read_rows(grid[0].files["csv"]))
    n = 20
    oracle = rows[("oracle", "oracle", "box")]
    assert num(oracle["top1"]) == 1 and num(oracle["top5"]) == 1
    assert num(oracle["chance_top1"]) == pytest.approx(1 / n) and num(oracle["chance_top5"]) == pytest.approx(5 / n)
    # a constant signal embeds every image as the same one-hot vector: that image is found, every other image
    # ties with 18 others below it (top-1 0, top-5 4/19 with ties broken at random): chance, 1/N and 5/N
    floor = rows[("mean_erp", "oracle", "box")]
    assert num(floor["top1"]) == pytest.approx(1 / n) and num(floor["top5"]) == pytest.approx(5 / n)
    # ... and its percept, the same for every image, is at chance among the ceiling percepts, exactly
    assert num(floor["percept_2way"]) == 0.5 and num(floor["percept_top1"]) == pytest.approx(1 / n)
    assert num(floor["percept_2way_lo"]) == num(floor["percept_2way_hi"]) == 0.5
    # the oracle's percepts are the ceiling percepts: identified perfectly, at every stage
    for col in ("percept_2way", "percept_top1", "decoded_2way", "decoded_top1"):
        assert num(oracle[col]) == 1, col
    # ... which is more than the brain's noise-free response allows: flagged, and only paths above it are
    assert oracle["above_truth"] == "true" and rows[("mean_erp", "oracle", "box")]["above_truth"] == "false"
    assert rows[("truth", "oracle", "box")]["above_truth"] == "false"
    measured = rows[("measured", "oracle", "box")]
    assert num(oracle["top1_fraction_of_measured"]) == pytest.approx(1 / num(measured["top1"]))
    # decoders without an embedding get no identification
    assert rows[("ridge", "ridge_pixels", "box")]["top1"] == ""


def test_signals_are_generated_once_and_the_second_run_hits_every_cache(grid):
    first, second, counts_first, counts_second = grid
    # 2 decoders reuse one generate() per encoder
    assert first.generate_calls == {"mean_erp": 1, "ridge": 1, "oracle": 1, "half_oracle": 1}
    assert counts_first == (1, 1, 1)
    assert second.generate_calls == {} and counts_second == (0, 0, 0)  # no refit, no regeneration
    a, b = by_key(read_rows(first.files["csv"])), by_key(read_rows(second.files["csv"]))
    for key in a:
        for col in ("pearson", "ssim", "norm_pearson", "top1", "encode_ms_per_image"):
            assert a[key][col] == b[key][col], (key, col)


def test_new_generation_settings_regenerate_without_refitting(synth_root, tmp_path):
    ScaledMeanERP.fits = ScaledMeanERP.generates = 0
    means = []
    for scale in (1.0, 2.0, 2.0):
        overrides = grid_overrides(synth_root, tmp_path / f"out{scale}", tmp_path / "cache")
        overrides = [o for o in overrides if not o.startswith("select.")] + [
            "+encoders.scaled._target_=tests.test_eval.ScaledMeanERP", f"+encoders.scaled.scale={scale}",
            "select.encoders=[scaled]", "select.decoders=[ridge_pixels]", "select.phosphenes=[box]"]
        result = evaluate_batch(compose_eval(overrides))
        means.append(result.generate_calls.get("scaled", 0))
    assert ScaledMeanERP.fits == 1  # one fit: scale is not a fit setting
    assert means == [1, 1, 0] and ScaledMeanERP.generates == 2  # scale 2 regenerates once, then is cached


def test_bad_selection_names_the_valid_ones():
    cfg = compose_eval(["select.encoders=[ridge,nope]"])
    with pytest.raises(ValueError, match=r"select.encoders: unknown name\(s\) 'nope'; valid names: measured, "
                                         r"mean_erp, ridge, dit_residual"):
        choose(cfg)
    with pytest.raises(ValueError, match="select.phosphenes: unknown name.*valid names: argus_scoreboard"):
        choose(compose_eval(["select.phosphenes=axon"]))
    with pytest.raises(ValueError, match="floor='ridgee' must name a configured encoder"):
        choose(compose_eval(["floor=ridgee"]))


def test_meg_dataset(tmp_path):
    from prosthesis_sim.data.synth import synthesize

    root = synthesize(tmp_path / "meg", modality="meg", n_subjects=1, n_train_concepts=8, images_per_concept=2,
                      n_test=6, train_reps=1, test_reps=2, image_size=32, seed=0, progress=False)
    cfg = compose_eval(grid_overrides(root, tmp_path / "out", tmp_path / "cache", dataset="things_meg")
                       + ["select.phosphenes=[box]"])
    result = evaluate_batch(cfg)
    rows = by_key(read_rows(result.files["csv"]))
    assert len(rows) == len(ENCODERS) * 2 and "MEG" in rows[("ridge", "ridge_pixels", "box")]["dataset"]
    assert num(rows[("oracle", "oracle", "box")]["norm_pearson"]) == pytest.approx(1.0, abs=1e-9)
    assert num(rows[("oracle", "oracle", "box")]["top1"]) == 1


def test_phosphene_models_by_config(synth_root, tmp_path):
    """Cortical, Dynaphos and torch models join the grid by config alone, each with its own ceiling."""
    overrides = [o for o in grid_overrides(synth_root, tmp_path / "out", tmp_path / "cache")
                 if not o.startswith("select.")] + [
        "+phosphene@phosphenes.torch_orion=torch_orion", "+phosphene@phosphenes.icvp_dynaphos=icvp_dynaphos",
        "+phosphene@phosphenes.torch_argus_temporal=torch_argus", "phosphenes.torch_argus_temporal.temporal={tau_ms:100,fps:30}",
        "select.encoders=[oracle]", "select.decoders=[oracle]",
        "select.phosphenes=[box,torch_orion,icvp_dynaphos,torch_argus_temporal]"]
    rows = by_key(read_rows(evaluate_batch(compose_eval(overrides)).files["csv"]))
    for phosphene in ("torch_orion", "icvp_dynaphos", "torch_argus_temporal"):
        oracle = rows[("oracle", "oracle", phosphene)]
        assert 0 < num(oracle["ceiling_pearson"]) <= 1
        # the oracle decodes the image itself, so it reaches its phosphene model's own ceiling
        assert num(oracle["norm_pearson"]) == pytest.approx(1.0, abs=1e-6)
    assert rows[("oracle", "oracle", "torch_orion")]["ceiling_pearson"] != rows[("oracle", "oracle", "box")][
        "ceiling_pearson"]


@pytest.mark.slow
def test_psim_eval_cli_and_report(synth_root, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "eval"
    proc = subprocess.run(
        [str(BIN / "psim-eval"), f"dataset.root={synth_root}", f"dataset.image_root={synth_root / 'images'}",
         "dataset.subject=2", f"out={out}", f"cache_dir={tmp_path / 'cache'}", "select.encoders=[ridge]",
         "select.decoders=[ridge_pixels]"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out / "results.csv")
    assert [r["encoder"] for r in rows] == ["measured", "truth", "mean_erp", "ridge", "thumbnail_2x2", "thumbnail_4x4"]
    assert {r["subject"] for r in rows} == {"sub-02"} and {r["phosphene"] for r in rows} == {"argus_scoreboard"}
    assert num(rows[2]["norm_pearson"]) == 0 and 0 < num(rows[0]["ceiling_pearson"]) <= 1
    assert "ridge / ridge_pixels / argus_scoreboard" in proc.stdout and (out / "percepts.png").is_file()

    from prosthesis_sim.report import build_report

    md = build_report([out], tmp_path / "report").read_text()
    assert "## Batch evaluation (psim-eval)" in md and "| ridge | ridge_pixels | argus_scoreboard |" in md
    assert "](../eval/percepts.png)" in md


def test_report_has_decodability(grid, tmp_path):
    from prosthesis_sim.report import build_report

    md = build_report([grid[0].files["csv"].parent], tmp_path / "report").read_text()
    assert "Decodability" in md
    line = next(x for x in md.splitlines() if x.startswith("- `oracle`"))
    assert "measured signals top-1 / top-5" in line and "oracle 1.000 / 1.000" in line and "chance 0.050 / 0.250" in line
