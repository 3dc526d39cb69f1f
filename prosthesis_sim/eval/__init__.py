"""Batch evaluation (`psim-eval`): encoders x decoders x phosphene models on a test split, with decodability.

``batch`` runs the grid and writes the files, ``decodability`` identifies test images from decoder
embeddings, ``tables`` writes results.csv / results.md, ``figure`` draws percepts.png, and
``report_section`` puts psim-eval folders into ``psim-report``. See docs/eval.md.
"""
from .batch import MEASURED, EvalResult, evaluate_batch, run_eval
from .decodability import embeds, identification

__all__ = ["MEASURED", "EvalResult", "evaluate_batch", "run_eval", "embeds", "identification"]
