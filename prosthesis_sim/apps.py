"""Command-line apps (Hydra): psim-synth, psim-train, psim-loop, psim-demo, psim-report, psim-eval.

Configs ship inside the install (package ``configs``), so the commands work from any folder. Every
command goes through ``command``: its config is validated before anything loads (``validate.py``) and
its errors through one layer (``errors.py``): a known error is one line and a non-zero exit.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .checkpoint import atomic_write_text
from .errors import exit_if_known, run_cli
from .pipeline import format_summary, format_table, run_configured_loop, train_and_evaluate
from .validate import validate

CONFIGS = "pkg://prosthesis_sim.configs"
log = logging.getLogger("prosthesis_sim")


def command(config_name: str):
    """``psim-<config_name>``: a Hydra app whose config is validated first, run through the error layer."""
    def wrap(task):
        @functools.wraps(task)
        def checked(cfg: DictConfig):
            try:
                validate(cfg, config_name)
                return task(cfg)
            except Exception as exc:  # reported here, before Hydra adds its own "Error executing job" line
                exit_if_known(f"psim-{config_name}", exc)
                raise

        main = hydra.main(version_base="1.3", config_path=CONFIGS, config_name=config_name)(checked)
        return functools.wraps(task)(lambda: run_cli(f"psim-{config_name}", main))
    return wrap


def _synth(cfg: DictConfig) -> Path:
    from .data.synth import synthesize

    args = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    return synthesize(**args)


@command("synth")
def synth(cfg: DictConfig) -> None:
    out = _synth(cfg)
    print(f"synthetic dataset ({cfg.get('modality', 'eeg')}, THINGS format) written to {out}")


@command("train")
def train(cfg: DictConfig) -> None:
    result = train_and_evaluate(cfg, cfg.out)
    if not result:  # a non-main torchrun process: the main one reports
        return
    print(f"\n{result['dataset']['description']}, {result['dataset']['subject']}: "
          f"{result['dataset']['n_train']} train / {result['dataset']['n_test']} test images")
    print(format_table({result["encoder_name"]: result["encoder"], "mean_erp": result["mean_erp"]}))
    nc = result["noise_ceiling"]
    print(f"noise ceiling {nc['noise_ceiling']:.3f} (split-half r {nc['split_half_r']:.3f}); "
          f"chance top1 {1 / result['dataset']['n_test']:.3f}, top5 {5 / result['dataset']['n_test']:.3f}")
    print(f"metrics: {Path(cfg.out) / 'metrics.json'}   encoder: {Path(cfg.out) / 'encoder'}")


@command("loop")
def loop(cfg: DictConfig) -> None:
    summary = run_configured_loop(cfg)
    print(format_summary(summary))
    print(f"outputs: {Path(cfg.out)}/summary.json, frames.jsonl" + (", panels.mp4" if cfg.loop.video else ""))


@command("demo")
def demo(cfg: DictConfig) -> None:
    """Synthesise the default dataset (once), fit the default models (cached), run the loop."""
    start = time.perf_counter()
    root = Path(cfg.dataset.root)
    from .data.synth import is_complete

    if not is_complete(root):
        log.info("synthesising the default dataset into %s", root)
        _synth(hydra.compose("synth", overrides=[f"out={root}"]))
    summary = run_configured_loop(cfg)
    summary["demo_wall_s"] = time.perf_counter() - start
    atomic_write_text(Path(cfg.out) / "summary.json", json.dumps(summary, indent=2))
    print("\n" + format_summary(summary))
    print(f"\ndemo finished in {summary['demo_wall_s']:.0f} s; outputs: {Path(cfg.out) / 'summary.json'} "
          f"and the video {Path(cfg.out) / 'panels.mp4'}")


@command("report")
def report(cfg: DictConfig) -> None:
    from .report import report_main

    report_main(cfg)


@command("eval")
def evaluate(cfg: DictConfig) -> None:
    """Every encoder x decoder x phosphene model on the test split: results.csv, results.md, percepts.png."""
    from .eval import run_eval

    run_eval(cfg)
