"""psim-eval: every encoder x decoder x phosphene model over a dataset's test split, with its verdicts.

Per combination and test image: signal -> ``decoder.decode`` -> phosphene percept, scored against the
image (Pearson, SSIM) and identified among the test images at every stage the information passes
(``identify``): the signal among the generated ones (signal space, decoder-free), the decoder's
embedding among the test images' (decoders that embed), the decoded image among the test images, and
the percept among the *ceiling percepts* (every test image sent straight through the same implant: the
"virtual patient"). The ceiling is the image straight to the implant; the floor is the floor encoder's
row (``mean_erp``) with the same decoder and phosphene model.

Reference rows are always evaluated: ``measured`` (the measured test averages, the real brain), the
floor, on synthetic data ``truth`` (the noise-free expected response, from psim-synth's own file), and
per decoder and implant the k x k luminance thumbnails (``thumbnail_2x2``, ``thumbnail_4x4``: how much
coarse layout alone gives). Every number gets a 95 % bootstrap interval over the test images and every
row is compared pairwise with the references (``verdicts``): comparisons.csv.

Models are fitted on the training split through ``fit_cached`` (keyed by config and data, never by
``out``); each encoder's test signals are generated once and cached (``signals``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, fit_cached, to_container
from ..evaluate import load_test_images
from ..protocols import can_sample_trials, is_image_independent
from ..scores import image_scores, normalised_score, to_grey
from .capture import capture
from .circularity import warn_circular
from .decodability import embeds, fraction_of, identification_per_image
from .figure import percept_figure, verdict_figure
from .identify import identify_sets
from .signals import Signals, equal_noise_name, generate_cached, load_encoder
from .tables import summary, write_comparisons, write_csv, write_markdown
from .verdicts import TRUTH, add_intervals, comparisons, flag_above_truth

log = logging.getLogger(__name__)

MEASURED = "measured"
SCORES = ("pearson", "ssim")
THUMBNAILS = (2, 4)  # k x k luminance thumbnails: reference rows per decoder and implant


def thumbnail_name(k: int) -> str:
    return f"thumbnail_{k}x{k}"
FIELDS = ("encoders", "decoders", "phosphenes")


@dataclass
class EvalResult:
    rows: list[dict]
    files: dict[str, Path]
    generate_calls: dict[str, int] = field(default_factory=dict)  # encoder name -> generate() calls made
    comparisons: list[dict] = field(default_factory=list)  # comparisons.csv's rows


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


def _per_image_scores(images, percepts) -> dict[str, np.ndarray]:
    scores = [image_scores(img, p) for img, p in zip(images, percepts)]
    return {k: np.array([s[k] for s in scores]) for k in SCORES}


def figure_indices(n: int, k: int) -> list[int]:
    """``k`` test images spread evenly over the test set (all when it has fewer)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()})


def thumbnail(image: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """The k x k luminance thumbnail of the whole frame (area averages), shown as blocks at ``shape``."""
    small = cv2.resize(to_grey(image), (k, k), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _command() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        task = [o.replace("\\{", "{").replace("\\}", "}") for o in HydraConfig.get().overrides.task]  # Hydra escapes ${
        return " ".join(["psim-eval", *task])
    except (ImportError, ValueError):  # not inside a Hydra app
        return None


def _signals(cfg, chosen, data, images, cache, seed, calls) -> tuple[dict[str, Signals], dict[str, dict]]:
    """Every row's test signals: measured, truth (synthetic data), each encoder's expected response and,
    for encoders that sample trials, the average of as many trials as the measured average has."""
    signals = {MEASURED: Signals(data.test_average().astype(np.float32), float("nan"))}
    if data.test_truth is not None and cfg.get("truth", True):
        signals[TRUTH] = Signals(data.test_truth.astype(np.float32), float("nan"))
    configs: dict[str, dict] = {}
    repetitions = int(data.test_repetitions().shape[1])
    equal_noise = (cfg.get("equal_noise") or {}).get("enabled", True)
    for name in chosen["encoders"]:
        if name == MEASURED:
            continue
        encoder, weights, settings, configs[name] = load_encoder(cfg, name, data, cache)
        signals[name] = generate_cached(name, encoder, weights, images, data, seed, cache, calls, settings)
        if equal_noise and repetitions > 1 and can_sample_trials(encoder) and not is_image_independent(encoder):
            avg = equal_noise_name(name, repetitions)
            signals[avg] = generate_cached(avg, encoder, weights, images, data, seed, cache, calls, settings,
                                           repetitions=repetitions)
            configs[avg] = configs[name]
        del encoder  # signals are all the grid needs; free the (diffusion) model
    return signals, configs


def evaluate_batch(cfg: DictConfig) -> EvalResult:
    """Run the whole grid of ``cfg`` (configs/eval.yaml) and write results.csv, comparisons.csv,
    results.md, percepts.png and verdicts.png."""
    out, cache, seed = Path(cfg.out), Path(cfg.cache_dir), int(cfg.seed)
    chosen = choose(cfg)
    data = instantiate(cfg.dataset)
    images = load_test_images(data)
    n = len(images)
    floor = cfg.floor
    boot = cfg.get("bootstrap") or {}
    n_resamples, boot_seed = int(boot.get("n_resamples", 2000)), int(boot.get("seed", 0))
    centre = bool((cfg.get("identify") or {}).get("centre", True))

    calls: dict[str, int] = {}
    signals, enc_configs = _signals(cfg, chosen, data, images, cache, seed, calls)
    decoders = {name: fit_cached(cfg.decoders[name], data, cache, "decoder")[0] for name in chosen["decoders"]}
    circular = warn_circular(enc_configs, {name: to_container(cfg.decoders[name]) for name in decoders})
    phosphenes = {name: instantiate(cfg.phosphenes[name]).build() for name in chosen["phosphenes"]}

    ceilings = {p: [still(model, to_grey(img)) for img in images] for p, model in phosphenes.items()}
    ceiling_scores = {p: _per_image_scores(images, ceilings[p]) for p in phosphenes}
    norm = data.normalizer  # the training split's per-channel z units: every sensor weighs alike
    measured_z = norm(signals[MEASURED].array)
    signal_ident = {name: identify_sets(measured_z, norm(sig.array), centre=centre)
                    for name, sig in signals.items() if name != MEASURED}
    parts = data.test_truth_components
    captured = {name: capture(sig.array, parts, data.normalizer) for name, sig in signals.items()} if parts else {}
    shown = figure_indices(n, int(cfg.figure.n_images))
    panels: dict[tuple, list[np.ndarray]] = {}

    rows, per_image = [], {}
    meta = {"n_images": n, "dataset": data.description, "subject": data.subject, "floor": floor}
    bar = tqdm(total=(len(signals) + len(THUMBNAILS)) * len(decoders) * len(phosphenes), desc="psim-eval",
               unit="combination", disable=None)
    for dec_name, decoder in decoders.items():
        gallery = decoder.embed_images(images, paths=list(data.test_images)) if embeds(decoder) else None
        paths: dict[str, tuple[np.ndarray, dict, float]] = {}  # row -> (decoded, per-image values, decode ms)
        for enc_name, sig in signals.items():
            start = time.perf_counter()
            decoded = _decode(dec_name, decoder, sig.array)
            values = {}
            if gallery is not None:
                ident = identification_per_image(decoder.embed(sig.array), gallery)
                values.update(top1=ident["top1"], top5=ident["top5"], embed_2way=ident["two_way"])
            if enc_name in signal_ident:
                values.update(signal_2way=signal_ident[enc_name]["two_way"], signal_top1=signal_ident[enc_name]["top1"])
            paths[enc_name] = (decoded, values, 1000 * (time.perf_counter() - start) / n)
        shape = paths[MEASURED][0].shape[1:]
        for k in THUMBNAILS:
            paths[thumbnail_name(k)] = (np.stack([thumbnail(img, k, shape) for img in images]), {}, float("nan"))
        targets = np.stack([cv2.resize(to_grey(img), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
                            for img in images])
        for enc_name, (decoded, values, decode_ms) in paths.items():
            ident = identify_sets(decoded, targets, centre=centre)
            values.update(decoded_2way=ident["two_way"], decoded_top1=ident["top1"])
            panels[("decoded", enc_name, dec_name)] = [decoded[i] for i in shown]
            for ph_name, model in phosphenes.items():
                start = time.perf_counter()
                percepts = [still(model, d) for d in decoded]
                phosphene_ms = 1000 * (time.perf_counter() - start) / n
                panels[("percept", enc_name, dec_name, ph_name)] = [percepts[i] for i in shown]
                ident = identify_sets(np.stack(percepts), np.stack(ceilings[ph_name]), centre=centre)
                key = (enc_name, dec_name, ph_name)
                per_image[key] = {**values, **_per_image_scores(images, percepts), "percept_2way": ident["two_way"],
                                  "percept_top1": ident["top1"]}
                sig = signals.get(enc_name)
                rows.append({"encoder": enc_name, "decoder": dec_name, "phosphene": ph_name,
                             **{k: float(np.mean(v)) for k, v in per_image[key].items()},
                             "chance_top1": 1 / n, "chance_top5": min(5, n) / n, "chance_2way": 0.5,
                             **{f"ceiling_{k}": float(np.mean(ceiling_scores[ph_name][k])) for k in SCORES},
                             "encode_ms_per_image": sig.ms_per_image if sig is not None else float("nan"),
                             "decode_ms_per_image": decode_ms, "phosphene_ms_per_image": phosphene_ms,
                             "circular": circular.get((enc_name, dec_name), ""), **captured.get(enc_name, {}),
                             **meta})
                bar.update()
    bar.close()
    _normalise(rows, floor)
    add_intervals(rows, per_image, floor, ceiling_scores, n_resamples, boot_seed)
    references = [r for r in dict.fromkeys([floor, "ridge", TRUTH, MEASURED]) if r in signals]
    compared = comparisons(rows, per_image, floor, references, ceiling_scores, n_resamples, boot_seed)
    flag_above_truth(rows, compared)

    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / "results.csv", "comparisons": out / "comparisons.csv", "md": out / "results.md",
             "figure": out / "percepts.png", "verdicts": out / "verdicts.png", "config": out / "eval_config.yaml"}
    write_csv(files["csv"], rows)
    write_comparisons(files["comparisons"], compared)
    title = f"psim-eval: {data.description}, {data.subject}, {n} test images"
    write_markdown(files["md"], rows, title, _command(), files["figure"].name, compared, files["verdicts"].name)
    figure_rows = [(f"ceiling\n({p})", [ceilings[p][i] for i in shown]) for p in phosphenes]
    by = {(r["encoder"], r["decoder"], r["phosphene"]): r for r in rows}
    for dec_name in decoders:
        for ph_name in phosphenes:
            for enc_name in [*signals, *map(thumbnail_name, THUMBNAILS)]:
                if cfg.figure.decoded and ph_name == next(iter(phosphenes)):
                    label = f"{enc_name}\n(no decoder)" if enc_name.startswith("thumbnail_") else \
                        f"{enc_name}\n{dec_name}: decoded"
                    figure_rows.append((label, panels[("decoded", enc_name, dec_name)]))
                r = by[(enc_name, dec_name, ph_name)]
                figure_rows.append((f"{enc_name}\n{dec_name}\n{ph_name}\n2-way {r['percept_2way']:.2f}, "
                                    f"norm. r {r['norm_pearson']:.2f}", panels[("percept", enc_name, dec_name, ph_name)]))
    percept_figure(files["figure"], [images[i] for i in shown], figure_rows, title)
    verdict_figure(files["verdicts"], rows, title)
    atomic_write_text(files["config"], OmegaConf.to_yaml(cfg, resolve=True))
    return EvalResult(rows, files, calls, compared)


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
    print(f"\nresults: {result.files['csv']}, {result.files['comparisons']}, {result.files['md']}, figures: "
          f"{result.files['figure']}, {result.files['verdicts']}")
    return result
