"""psim-eval: every encoder x decoder x phosphene model over a dataset's test split, in one table.

Per combination and test image: signal -> ``decoder.decode`` -> phosphene percept -> ``image_scores``
against the image. The ceiling is the image straight to the implant (``phosphene(to_grey(image))``,
per phosphene model); the floor is the floor encoder's row (``mean_erp``) with the same decoder and
phosphene model; scores are normalised on their means over the test images, as the loop does.

Two reference encoders are always evaluated and always in the table, whatever ``select.encoders``
says: ``measured`` (the measured test averages, the real brain) and the floor, because every
normalised score and decodability fraction is relative to them.

Models are fitted on the training split through ``fit_cached`` (keyed by config and data, never by
``out``). Each encoder generates the test signals once; the array is cached on disk keyed by the
encoder's saved weights (their sha256), the test image files and the seed, and every decoder and
phosphene model reuses it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ..checkpoint import CONFIG, WEIGHTS, atomic_write, atomic_write_text, fit_cached, load_component, to_container
from ..evaluate import load_test_images
from ..features.cache import cache_key
from ..scores import image_scores, normalised_score, to_grey
from .decodability import embeds, fraction_of, identification
from .figure import percept_figure
from .tables import summary, write_csv, write_markdown

log = logging.getLogger(__name__)

MEASURED = "measured"
SCORES = ("pearson", "ssim")
FIELDS = ("encoders", "decoders", "phosphenes")


@dataclass
class Signals:
    """Signals for the test images (n, channels, times) and the encoder's time per image (ms)."""

    array: np.ndarray
    ms_per_image: float


@dataclass
class EvalResult:
    rows: list[dict]
    files: dict[str, Path]
    generate_calls: dict[str, int] = field(default_factory=dict)  # encoder name -> generate() calls made


# --- choosing ---------------------------------------------------------------------------------------

def available(cfg) -> dict[str, list[str]]:
    """The names each selection may use: the composed entries (plus ``measured`` and ``encoder_dirs``)."""
    encoders = [MEASURED, *(cfg.get("encoders") or {}), *(cfg.get("encoder_dirs") or {})]
    return {"encoders": list(dict.fromkeys(encoders)), "decoders": list(cfg.get("decoders") or {}),
            "phosphenes": list(cfg.get("phosphenes") or {})}


def choose(cfg) -> dict[str, list[str]]:
    """``select.<field>`` (null = all) checked against the available names; references added to encoders."""
    names = available(cfg)
    select = cfg.get("select") or {}
    chosen = {}
    for key in FIELDS:
        want = select.get(key)
        if want is None:
            want = names[key]
        elif isinstance(want, str):
            want = [want]
        want = list(dict.fromkeys(want))
        unknown = [w for w in want if w not in names[key]]
        if unknown:
            raise ValueError(f"select.{key}: unknown name(s) {', '.join(map(repr, unknown))}; valid names: "
                             f"{', '.join(names[key]) or '(none configured)'}")
        if not want:
            raise ValueError(f"select.{key} is empty: choose at least one of {', '.join(names[key])}")
        chosen[key] = want
    floor = cfg.get("floor")
    if floor not in names["encoders"] or floor == MEASURED:
        raise ValueError(f"floor={floor!r} must name a configured encoder (the floor of the normalised scores); "
                         f"valid names: {', '.join(n for n in names['encoders'] if n != MEASURED)}")
    chosen["encoders"] = list(dict.fromkeys([MEASURED, floor, *chosen["encoders"]]))
    return chosen


# --- signals ----------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encoder_dir(path) -> Path:
    """A saved encoder folder, or a psim-train run folder holding ``encoder/``."""
    path = Path(path)
    if not (path / WEIGHTS).is_file() and (path / "encoder" / WEIGHTS).is_file():
        return path / "encoder"
    return path


def load_encoder(cfg, name: str, data, cache: Path):
    """(encoder, its weights file, its settings as text): loaded from ``encoder_dirs[name]`` or fitted
    through fit_cached. The settings include what the fit cache ignores (sampler, steps, guidance ...),
    which changes the generated signals."""
    dirs = cfg.get("encoder_dirs") or {}
    if name in dirs:
        directory = _encoder_dir(dirs[name])
        try:
            encoder = load_component(directory, data)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"encoder_dirs.{name}={dirs[name]}: {err} (give a psim-train output folder "
                                    "or its encoder/ folder)") from err
        return encoder, directory / WEIGHTS, (directory / CONFIG).read_text()
    encoder, directory = fit_cached(cfg.encoders[name], data, cache, "encoder")
    return encoder, Path(directory) / WEIGHTS, json.dumps(to_container(cfg.encoders[name]), sort_keys=True)


def _check_signals(name: str, signals, data) -> np.ndarray:
    signals = np.asarray(signals, dtype=np.float32)
    want = (len(data.test_images), *data.signal_shape)
    if signals.shape != want:
        raise ValueError(f"encoder {name!r} generated signals of shape {signals.shape}, expected {want} "
                         f"(test images x channels x times of {data.description} {data.subject})")
    if not np.isfinite(signals).all():
        raise ValueError(f"encoder {name!r} generated {int((~np.isfinite(signals)).sum())} NaN/Inf values")
    return signals


def generate_cached(name: str, encoder, weights: Path, images: list[np.ndarray], data, seed: int,
                    cache: Path, calls: dict[str, int], settings: str = "") -> Signals:
    """The encoder's test signals, generated once and cached by (weights sha256, settings, test image
    files, seed): new sampling settings regenerate without refitting."""
    settings_sha = hashlib.sha256(settings.encode()).hexdigest()
    key = cache_key(f"signals|{_sha256(weights)}|{settings_sha}|seed={seed}", [Path(p) for p in data.test_images])
    path = cache / "signals" / f"signals-{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            log.info("%s: reusing generated test signals %s", name, path)
            return Signals(_check_signals(name, f["signals"], data), float(f["ms_per_image"]))
    start = time.perf_counter()
    signals = encoder.generate(images, seed=seed, paths=list(data.test_images))
    ms = 1000 * (time.perf_counter() - start) / len(images)
    calls[name] = calls.get(name, 0) + 1
    signals = _check_signals(name, signals, data)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, signals=signals, ms_per_image=np.float64(ms))

    atomic_write(path, write)
    return Signals(signals, ms)


# --- scoring ----------------------------------------------------------------------------------------

def _decode(name: str, decoder, signals: np.ndarray) -> np.ndarray:
    out = np.asarray(decoder.decode(signals), dtype=np.float32)
    if out.ndim != 3 or len(out) != len(signals):
        raise ValueError(f"decoder {name!r} returned shape {out.shape} for {len(signals)} signals; "
                         "expected grey images (n, height, width)")
    return out


def still(phosphene, image: np.ndarray) -> np.ndarray:
    """One still image's percept: a model with temporal state starts from rest for every image."""
    reset = getattr(phosphene, "reset", None)
    if reset is not None:
        reset()
    return phosphene(image)


def _mean_scores(images, percepts) -> dict[str, float]:
    scores = [image_scores(img, p) for img, p in zip(images, percepts)]
    return {k: float(np.mean([s[k] for s in scores])) for k in SCORES}


def figure_indices(n: int, k: int) -> list[int]:
    """``k`` test images spread evenly over the test set (all when it has fewer)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()})


def _command() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        task = [o.replace("\\{", "{").replace("\\}", "}") for o in HydraConfig.get().overrides.task]  # Hydra escapes ${
        return " ".join(["psim-eval", *task])
    except (ImportError, ValueError):  # not inside a Hydra app
        return None


def evaluate_batch(cfg: DictConfig) -> EvalResult:
    """Run the whole grid of ``cfg`` (configs/eval.yaml) and write results.csv, results.md, percepts.png."""
    out, cache, seed = Path(cfg.out), Path(cfg.cache_dir), int(cfg.seed)
    chosen = choose(cfg)
    data = instantiate(cfg.dataset)
    images = load_test_images(data)
    n = len(images)
    floor = cfg.floor

    calls: dict[str, int] = {}
    signals = {MEASURED: Signals(data.test_average().astype(np.float32), float("nan"))}
    for name in chosen["encoders"]:
        if name != MEASURED:
            encoder, weights, settings = load_encoder(cfg, name, data, cache)
            signals[name] = generate_cached(name, encoder, weights, images, data, seed, cache, calls, settings)
            del encoder  # signals are all the grid needs; free the (diffusion) model
    decoders = {name: fit_cached(cfg.decoders[name], data, cache, "decoder")[0] for name in chosen["decoders"]}
    phosphenes = {name: instantiate(cfg.phosphenes[name]).build() for name in chosen["phosphenes"]}

    ceilings = {p: [still(model, to_grey(img)) for img in images] for p, model in phosphenes.items()}
    ceiling_scores = {p: _mean_scores(images, ceilings[p]) for p in phosphenes}
    shown = figure_indices(n, int(cfg.figure.n_images))
    panels: dict[tuple, list[np.ndarray]] = {}

    rows = []
    meta = {"n_images": n, "dataset": data.description, "subject": data.subject, "floor": floor}
    bar = tqdm(total=len(signals) * len(decoders) * len(phosphenes), desc="psim-eval", unit="combination",
               disable=None)
    for dec_name, decoder in decoders.items():
        gallery = decoder.embed_images(images, paths=list(data.test_images)) if embeds(decoder) else None
        for enc_name, sig in signals.items():
            start = time.perf_counter()
            decoded = _decode(dec_name, decoder, sig.array)
            decode_ms = 1000 * (time.perf_counter() - start) / n
            panels[("decoded", enc_name, dec_name)] = [decoded[i] for i in shown]
            ident = identification(decoder.embed(sig.array), gallery) if gallery is not None else {}
            for ph_name, model in phosphenes.items():
                start = time.perf_counter()
                percepts = [still(model, d) for d in decoded]
                phosphene_ms = 1000 * (time.perf_counter() - start) / n
                panels[("percept", enc_name, dec_name, ph_name)] = [percepts[i] for i in shown]
                rows.append({"encoder": enc_name, "decoder": dec_name, "phosphene": ph_name,
                             **_mean_scores(images, percepts), **ident,
                             **{f"ceiling_{k}": ceiling_scores[ph_name][k] for k in SCORES},
                             "encode_ms_per_image": sig.ms_per_image, "decode_ms_per_image": decode_ms,
                             "phosphene_ms_per_image": phosphene_ms, **meta})
                bar.update()
    bar.close()
    _normalise(rows, floor)

    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "results.csv", "md": out / "results.md", "figure": out / "percepts.png",
             "config": out / "eval_config.yaml"}
    write_csv(files["csv"], rows)
    title = f"psim-eval: {data.description}, {data.subject}, {n} test images"
    write_markdown(files["md"], rows, title, _command(), files["figure"].name)
    figure_rows = [(f"ceiling\n({p})", [ceilings[p][i] for i in shown]) for p in phosphenes]
    norm = {(r["encoder"], r["decoder"], r["phosphene"]): r["norm_pearson"] for r in rows}
    for dec_name in decoders:
        for ph_name in phosphenes:
            for enc_name in signals:
                if cfg.figure.decoded and ph_name == next(iter(phosphenes)):
                    figure_rows.append((f"{enc_name}\n{dec_name}: decoded", panels[("decoded", enc_name, dec_name)]))
                figure_rows.append((f"{enc_name}\n{dec_name}\n{ph_name}\nnorm. Pearson {norm[(enc_name, dec_name, ph_name)]:.2f}",
                                    panels[("percept", enc_name, dec_name, ph_name)]))
    percept_figure(files["figure"], [images[i] for i in shown], figure_rows, title)
    atomic_write_text(files["config"], OmegaConf.to_yaml(cfg, resolve=True))
    return EvalResult(rows, files, calls)


def _normalise(rows: list[dict], floor: str) -> None:
    """norm_* against the floor row and the ceiling; decodability fractions against the measured row."""
    by = {(r["encoder"], r["decoder"], r["phosphene"]): r for r in rows}
    for row in rows:
        low = by[(floor, row["decoder"], row["phosphene"])]
        ref = by[(MEASURED, row["decoder"], row["phosphene"])]
        for k in SCORES:
            row[f"floor_{k}"] = low[k]
            row[f"norm_{k}"] = normalised_score(row[k], low[k], row[f"ceiling_{k}"])
        for k in ("top1", "top5"):
            row[f"{k}_fraction_of_measured"] = fraction_of(row.get(k, float("nan")), ref.get(k, float("nan")))
    for row in rows:  # after every norm_pearson exists
        ref = by[(MEASURED, row["decoder"], row["phosphene"])]
        row["norm_pearson_fraction_of_measured"] = fraction_of(row["norm_pearson"], ref["norm_pearson"])


def run_eval(cfg: DictConfig) -> EvalResult:
    """What ``psim-eval`` does: the batch evaluation, then the summary table on the console."""
    result = evaluate_batch(cfg)
    print("\n" + summary(result.rows))
    print(f"\nresults: {result.files['csv']}, {result.files['md']}, figure: {result.files['figure']}")
    return result
