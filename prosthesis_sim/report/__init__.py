"""Evaluation report: saved psim-train runs (and psim-eval folders) -> report.md, CSVs and topography
PNGs (see docs/report.md).

Within-subject numbers are read from each run's metrics.json, never recomputed. The cross-subject
matrix, the generated signals of the topographies and the (opt-in) sampler sweep need each saved
encoder to generate again; those results are cached as JSON in ``<out>/cache`` (keyed by the weights
file, the dataset config, the target data files and the seed), so rebuilding a report only redraws it.
Each run's dataset is rebuilt from the Hydra config its metrics.json records (``dataset_config``), so
EEG (THINGS-EEG2) and MEG (THINGS-MEG) runs both work; older runs without it are read as THINGS-EEG2.

Modules: ``runs`` (reading runs, row labels), ``scoring`` (cached re-evaluation), ``sections`` (the
Markdown tables), ``build`` (the whole report).
"""
from .build import build_report, report_main
from .runs import Run, dataset_config, describe_encoder, find_runs, load_dataset, load_runs
from .scoring import evaluate_on_subject, evaluate_sampler
from .sections import METRICS, conditioning_label

__all__ = ["METRICS", "Run", "build_report", "conditioning_label", "dataset_config", "describe_encoder",
           "evaluate_on_subject", "evaluate_sampler", "find_runs", "load_dataset", "load_runs", "report_main"]
