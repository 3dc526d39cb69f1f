"""What the command-line apps do, as plain functions of a Hydra config (so tests call them directly)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from . import distributed
from .checkpoint import atomic_write_text, check_component_dir, fit_cached, load_component, save_component, to_container
from .errors import ComponentError
from .eval.single_trials import evaluate_single_trials, save_figure_data
from .evaluate import evaluate_encoder, load_test_images, noise_ceiling, takes_cache_dir, with_ceiling
from .live import open_views
from .loop import ClosedLoop, check_signal, run_loop
from .protocols import can_sample_trials
from .render import PanelRenderer
from .sources import open_source
from .validate import check_output_folder, validate

log = logging.getLogger(__name__)

TABLE_KEYS = ("mse", "pcc", "pcc_channel", "top1", "top5", "pcc_fraction_of_ceiling")
LABELS = {"pcc_fraction_of_ceiling": "pcc/ceiling"}


def format_table(rows: dict[str, dict], keys=TABLE_KEYS) -> str:
    """A plain-text table: one row per name, one column per key."""
    width = max(len(n) for n in rows) + 2
    lines = [" " * width + "".join(f"{LABELS.get(k, k):>12}" for k in keys)]
    for name, vals in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{vals.get(k, float('nan')):>12.3f}" for k in keys))
    return "\n".join(lines)


def train_and_evaluate(cfg, out: str | Path) -> dict:
    """Fit ``cfg.encoder`` on ``cfg.dataset``, save it to out/encoder, score it and the mean-ERP floor.

    Under torchrun only the main process saves and scores; the others return an empty dict.
    """
    out = Path(out)
    data = instantiate(cfg.dataset)
    encoder, train_s = _fit_encoder(cfg, data)
    if not distributed.context().main:
        return {}  # under torchrun every process trains; the main one saves and evaluates
    images = load_test_images(data)
    ceiling = noise_ceiling(data, seed=cfg.seed)
    save_component(encoder, out / "encoder", cfg.encoder, data.epoch)
    baseline = instantiate(cfg.baseline)
    baseline.fit(data)
    result = {
        "dataset": {"root": str(cfg.dataset.root), "subject": data.subject, "description": data.description,
                    "n_train": int(data.train.shape[0]), "n_test": int(data.test.shape[0])},
        "dataset_config": to_container(cfg.dataset),
        "seed": int(cfg.seed),
        "encoder_name": cfg.encoder._target_.rsplit(".", 1)[-1],
        "train_s": train_s,
        "noise_ceiling": ceiling,
        "encoder": with_ceiling(evaluate_encoder(encoder, data, images, seed=cfg.seed), ceiling),
        "mean_erp": with_ceiling(evaluate_encoder(baseline, data, images, seed=cfg.seed), ceiling),
    }
    trials = single_trial_realism(cfg, encoder, data, images, out)
    if trials is not None:
        result["single_trials"] = trials
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    return result


def _fit_encoder(cfg, data):
    """Fit ``cfg.encoder``; with ``cfg.fit_cache`` reuse a fit saved there under the same fit key (the
    config keys that change a fit and the data: new sampling settings re-evaluate without a refit).
    Returns the encoder and the seconds its fit took (read back on a cache hit)."""
    start = time.perf_counter()
    if not cfg.get("fit_cache"):
        encoder = instantiate(cfg.encoder)
        encoder.fit(data)  # a resumed training reports the seconds of all its sessions (train_seconds)
        return encoder, float(getattr(encoder, "train_seconds", time.perf_counter() - start))
    encoder, directory = fit_cached(cfg.encoder, data, cfg.fit_cache, "encoder")
    record = directory / "fit_seconds.json"
    if record.is_file():
        return encoder, float(json.loads(record.read_text())["train_s"])
    train_s = float(getattr(encoder, "train_seconds", time.perf_counter() - start))
    atomic_write_text(record, json.dumps({"train_s": train_s}))
    return encoder, train_s


def single_trial_realism(cfg, encoder, data, images, out: Path) -> dict | None:
    """Single-trial realism (``cfg.single_trials``): with ``enabled: auto`` it runs when the training data
    are single trials and the encoder samples trials. Writes out/single_trials.json and the figure's
    arrays (single_trials.npz); returns the metrics, or None when it does not apply."""
    spec = cfg.get("single_trials") or {}
    enabled = spec.get("enabled", "auto")
    single = data.train.shape[1] > 1 or cfg.dataset.get("average_train", True) is False  # MEG: one trial each
    applies = single and can_sample_trials(encoder)
    if enabled is False or str(enabled) == "false" or (str(enabled) == "auto" and not applies):
        return None
    if not can_sample_trials(encoder):
        raise ComponentError(f"single_trials.enabled=true, but {type(encoder).__name__} does not sample single trials")
    if not single:
        raise ValueError("single-trial realism needs single training trials (dataset.average_train=false): the "
                         f"training data hold {data.train.shape[1]} repetition per image, an average")
    if cfg.get("fit_cache"):  # fitted once per data and config, like the encoder (a rerun resamples, not refits)
        mean_encoder = fit_cached(spec["mean"], data, cfg.fit_cache, "single_trials_mean")[0]
    else:
        mean_encoder = instantiate(spec["mean"])
        mean_encoder.fit(data)
    kwargs = {"cache_dir": data.cache_dir} if data.cache_dir is not None and takes_cache_dir(encoder) else {}
    metrics, figure = evaluate_single_trials(encoder, mean_encoder, data, images, seed=cfg.seed, kwargs=kwargs)
    result = {"n_trials": int(data.test_repetitions().shape[1]), "mean_model": spec["mean"]["_target_"],
              "rows": metrics}
    atomic_write_text(out / "single_trials.json", json.dumps(result, indent=2))
    save_figure_data(out / "single_trials.npz", figure)
    log.info("single trials: %s", "; ".join(f"{k}: two-sample accuracy {v['two_sample_accuracy']:.3f}"
                                            for k, v in metrics.items()))
    return result


def build_loop(cfg) -> tuple[ClosedLoop, PanelRenderer]:
    """Load or fit (cached) every model once, build the phosphene model, and return the ready loop."""
    signal, repetitions = cfg.loop.get("signal", "mean"), cfg.loop.get("repetitions", 1)
    if signal == "trials" and not cfg.get("encoder_dir"):  # before an hour of fitting, not after
        from hydra.utils import get_class

        cls = get_class(cfg.encoder._target_)
        if not callable(getattr(cls, "sample_trials", None)):
            check_signal(None, signal, repetitions, name=cls.__name__)  # names the encoders that sample trials
    data = instantiate(cfg.dataset)
    cache = Path(cfg.cache_dir)
    if cfg.get("encoder_dir"):
        encoder = load_component(cfg.encoder_dir, data)
        shape = encoder.generate([np.zeros((32, 32, 3), np.uint8)]).shape[1:]
        if shape != data.signal_shape:
            raise ComponentError(f"encoder_dir={cfg.encoder_dir} generates signals of shape {shape}, but dataset "
                             f"{cfg.dataset.root} ({data.subject}) has {data.signal_shape}: decoder and scores "
                             "need the encoder's montage and epoch")
    else:
        encoder, _ = fit_cached(cfg.encoder, data, cache, "encoder")
    floor, _ = fit_cached(cfg.floor, data, cache, "floor")
    decoder, _ = fit_cached(cfg.decoder, data, cache, "decoder")
    phosphene = instantiate(cfg.phosphene).build()
    loop = ClosedLoop(encoder, floor, decoder, phosphene, data.normalizer, seed=cfg.seed, signal=signal,
                      repetitions=repetitions)
    renderer = PanelRenderer(data.info, data.times, size=cfg.loop.panel_size, decoder=stage_name(cfg, "decoder"),
                             phosphene=stage_name(cfg, "phosphene"),
                             signal=loop.describe_signal(short=True))
    return loop, renderer


def stage_name(cfg, group: str) -> str:
    """The config option chosen for ``group`` (e.g. ``ridge_pixels``) under Hydra, else the class name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return str(cfg[group].get("_target_", group)).rsplit(".", 1)[-1]


def run_configured_loop(cfg) -> dict:
    """psim-loop: check the config, the source, the output folder and the display, then load the models
    (the slow part) and run the loop."""
    validate(cfg, "loop")
    source = open_source(instantiate(cfg.source))
    out = check_output_folder(cfg.out)
    stages = {g: stage_name(cfg, g) for g in ("encoder", "decoder", "phosphene", "source")}
    stages.update(floor=stage_name(cfg, "floor"), **({"encoder": f"encoder_dir={cfg.encoder_dir}"}
                                                      if cfg.get("encoder_dir") else {}))
    views = open_views(cfg.loop.display, cfg.loop.get("web"), source, stages)  # the page shows while models load
    try:
        if cfg.get("encoder_dir"):
            check_component_dir(cfg.encoder_dir, "encoder_dir")
        loop, renderer = build_loop(cfg)
        return run_loop(loop, source, renderer, out, display=views, max_frames=cfg.loop.max_frames,
                        queue_size=cfg.loop.queue_size, realtime=cfg.loop.realtime, write_video=cfg.loop.video,
                        stages=stages, evaluate=cfg.loop.get("evaluate", "auto"))
    finally:
        views.close()


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_summary(summary: dict) -> str:
    fps = summary.get("fps")
    lines = [f"frames {summary['frames']}  dropped {summary['dropped_frames']}  fps {_num(fps, '.2f')}"
             + (f"  stopped: {summary['stopped']}" if summary.get("stopped") else "")]
    if summary.get("dropped_frames"):
        lines.append(f"dropped {summary['dropped_frames']} of {summary.get('captured_frames', '?')} frames: "
                     f"{summary.get('dropped_reason')}")
    lines += ["median latency (ms): " + "  ".join(f"{k} {v:.1f}" for k, v in summary["median_latency_ms"].items()),
              f"{'':<10}{'ssim':>8}{'pearson':>10}"]
    for name, vals in summary["mean_scores"].items():
        lines.append(f"{name:<10}{vals['ssim']:>8.3f}{vals['pearson']:>10.3f}")
    n = summary["normalised_score"]
    lines.append(f"{'normalised':<10}{_num(n['ssim'], '8.3f'):>8}{_num(n['pearson'], '10.3f'):>10}"
                 "   (path - floor) / (ceiling - floor)")
    for k, why in summary.get("normalised_score_undefined", {}).items():
        lines.append(f"normalised {k} is undefined: {why}")
    return "\n".join(lines)
