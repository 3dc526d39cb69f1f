"""psim-report's "Loop runs (psim-loop)" section: loop output folders (summary.json + frames.jsonl).

Why: psim-report used to ignore loop runs silently. Now every folder it is given, or every direct
subfolder of one, is a psim-train run (metrics.json), a psim-eval folder (results.csv), a psim-loop
run (summary.json and frames.jsonl, as psim-loop and psim-demo write them) or is skipped with its
reason, both in the log ("skipped DIR (why)") and at the end of the report. Hidden subfolders are
not looked at. The numbers are read from summary.json, never recomputed.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from .sections import md_table, write_csv

log = logging.getLogger(__name__)

SUMMARY, FRAMES = "summary.json", "frames.jsonl"
OTHERS = ("metrics.json", "results.csv")  # psim-train, psim-eval: the rest of the report reads them
CSV = "loop_runs.csv"
STAGES = ("source", "encoder", "decoder", "phosphene")


def is_loop_run(path: Path) -> bool:
    return (path / SUMMARY).is_file() and (path / FRAMES).is_file()


def _is_other_run(path: Path) -> bool:
    return any((path / name).is_file() for name in OTHERS)


def why_skipped(path: Path) -> str:
    """Why a folder is not a run of any psim command, in words for the log and the report."""
    if not path.is_dir():
        return "not a folder"
    if (path / SUMMARY).is_file():
        return f"{SUMMARY} without {FRAMES}: not a psim-loop run"
    if (path / FRAMES).is_file() or (path / ".frames.partial.jsonl").is_file():
        return f"{FRAMES} without {SUMMARY}: a psim-loop run that never finished"
    return f"no metrics.json (psim-train), results.csv (psim-eval) or {SUMMARY} + {FRAMES} (psim-loop)"


def split_loop_runs(paths) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(psim-loop run folders, paths for the rest of the report, skipped (folder, why)) among ``paths``
    and their direct subfolders. A path with nothing the report reads is an error, as before."""
    loops, rest, skipped = [], [], []
    for path in map(Path, paths):
        if is_loop_run(path):
            loops.append(path)
        elif _is_other_run(path):
            rest.append(path)
        else:
            subs = sorted(p for p in path.glob("*") if p.is_dir() and not p.name.startswith("."))
            mine = [p for p in subs if is_loop_run(p)]
            others = [p for p in subs if p not in mine and _is_other_run(p)]
            if not mine and not others:
                raise FileNotFoundError(f"{path}: no metrics.json (psim-train run), results.csv (psim-eval) or "
                                        f"{SUMMARY} + {FRAMES} (psim-loop run) here or in its subfolders")
            loops += mine
            if others:
                rest.append(path)  # the rest of the report picks its runs among the subfolders
            skipped += [(p, why_skipped(p)) for p in subs if p not in mine and p not in others]
    for path, why in skipped:
        log.warning("skipped %s (%s)", path, why)
    return loops, rest, skipped


def _num(value, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def read_loop_run(path: Path) -> dict:
    """One row of the table (and of loop_runs.csv) from the run's summary.json."""
    try:
        s = json.loads((path / SUMMARY).read_text())
        scores, lat = s["mean_scores"], s["median_latency_ms"]
        row = {"run": str(path), "frames": s["frames"], "captured": s.get("captured_frames"),
               "dropped": s.get("dropped_frames"), "fps": s.get("fps"), "wall_s": s.get("wall_s"),
               "stopped": s.get("stopped"), "loop_fps": s.get("loop_fps"),
               # runs from before the evaluation thread evaluated every frame, on the loop's thread
               "evaluation": s.get("evaluation", "every"), "evaluated": s.get("evaluated_frames", s["frames"])}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / SUMMARY}: not a psim-loop summary ({type(err).__name__}: {err})") from err
    row.update({f"stage_{k}": v for k, v in (s.get("stages") or {}).items()})
    row.update({f"latency_{k}_ms": v for k, v in lat.items()})
    row.update({f"{p}_{k}": v for p, vals in scores.items() for k, v in vals.items()})
    row.update({f"normalised_{k}": v for k, v in s.get("normalised_score", {}).items()})
    row["dropped_reason"] = s.get("dropped_reason")
    return row


def loop_section(folders: list[Path], out: Path, skipped: list[tuple[Path, str]] = ()) -> list[str]:
    """Markdown lines: the loop runs' table (and loop_runs.csv), then the folders skipped; none when both
    are empty (an earlier loop_runs.csv is removed then)."""
    lines = []
    rows = [read_loop_run(p) for p in folders]
    if rows:
        table = []
        for r in rows:
            stages = " → ".join(str(r[f"stage_{k}"]) for k in STAGES if f"stage_{k}" in r) or "–"
            dropped = f"{r['dropped']} of {r['captured']}" if r.get("captured") is not None else _num(r["dropped"], "d")
            table.append([f"`{r['run']}`", stages, str(r["frames"]), dropped, _num(r["fps"], ".2f"),
                          _num(r.get("latency_loop_ms"), ".1f"), _num(r.get("latency_total_ms"), ".1f"),
                          *(_num(r.get(f"{p}_pearson"), ".3f") for p in ("path", "floor", "ceiling")),
                          _num(r.get("normalised_pearson"), ".3f"), _num(r.get("normalised_ssim"), ".3f"),
                          str(r.get("stopped") or "–")])
        lines += ["", "## Loop runs (psim-loop)", "",
                  (f"Read from each run's `{SUMMARY}`. Latency: medians in ms, `loop` = encode + decode + phosphene "
                   "(the loop's thread: what a device runs), `total` adds the evaluation (floor and ceiling paths and "
                   "the scores, on its own thread) of the evaluated frames. Scores: means over the evaluated frames "
                   "(the loop does not wait for the evaluation: `evaluated` and `loop_fps` in `loop_runs.csv`; Pearson "
                   "r here, SSIM too in the CSV); normalised = (path - floor) / (ceiling - floor) of the means "
                   "(– where the ceiling equals the floor)."), "",
                  md_table(["run", "stages", "frames", "dropped", "fps", "loop ms", "total ms", "path r", "floor r",
                            "ceiling r", "norm. r", "norm. SSIM", "stopped"], table)]
        reasons = [f"- `{r['run']}`: {r['dropped_reason']}" for r in rows
                   if r.get("dropped") and r.get("dropped_reason")]
        if reasons:
            lines += ["", "Why frames were dropped:", "", *reasons]
        write_csv(out / CSV, rows)
    else:
        (out / CSV).unlink(missing_ok=True)  # no stale table from an earlier build
    if skipped:
        lines += ["", "## Skipped folders", "",
                  "Folders among `runs` (or their subfolders) that no psim command wrote:", "",
                  *(f"- `{path}`: {why}" for path, why in skipped)]
    return lines
