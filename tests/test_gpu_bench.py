"""bench/gpu.py, the GPU bench, run on the CPU at tiny sizes so that it cannot rot.

The slow test runs `bench/gpu.py --tiny --device cpu --json FILE` as a subprocess and checks the JSON
with ``problems``: every (model, precision, batch) row the bench promises, measured (on the CPU at
tiny sizes nothing may be skipped, except fp16 training, which must say why), with finite positive
timings, and the training rows. The fast tests show that ``problems`` finds a missing row, a bad
timing or a skip without a reason, and that the full sizes refuse to start without a GPU.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "gpu.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu = load_bench()
STAGES = ("features_ms", "encode_ms", "decode_ms", "phosphene_ms", "loop_ms", "fps")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def problems(report: dict, cpu_tiny: bool = True) -> list[str]:
    """What is wrong with a bench report (empty: nothing)."""
    found = []
    meta, rows = report.get("meta", {}), report.get("rows", [])
    if meta.get("interrupted"):
        found.append(f"interrupted: {meta['interrupted']}")
    loops = {}
    for r in rows:
        if r.get("kind") == "loop":
            key = (r["model"], r["precision"], r["batch"])
            if key in loops:
                found.append(f"duplicate row {key}")
            loops[key] = r
    for model in gpu.MODEL_NAMES:
        for precision in gpu.PRECISIONS:
            for batch in gpu.BATCHES:
                key = (model, precision, batch)
                r = loops.get(key)
                if r is None:
                    found.append(f"missing row {key}")
                    continue
                if r.get("skipped") is not None:
                    if cpu_tiny:  # nothing may be skipped on the CPU at tiny sizes
                        found.append(f"{key} skipped: {r['skipped']!r}")
                    continue
                bad = [k for k in STAGES if not positive(r.get(k))]
                if bad:
                    found.append(f"{key}: not finite positive: {', '.join(f'{k}={r.get(k)!r}' for k in bad)}")
                    continue
                if not math.isclose(r["fps"], batch * 1e3 / r["loop_ms"], rel_tol=1e-6):
                    found.append(f"{key}: fps {r['fps']} is not batch x 1000 / loop_ms")
                if r["loop_ms"] < max(r[k] for k in STAGES[:4]) * 0.999:
                    found.append(f"{key}: loop_ms {r['loop_ms']} below a stage's median")
                if not (isinstance(r.get("reps"), int) and r["reps"] >= 1):
                    found.append(f"{key}: reps {r.get('reps')!r}")
                if precision == "compiled" and not positive(r.get("compile_s")):
                    found.append(f"{key}: compile_s {r.get('compile_s')!r}")
                if cpu_tiny and precision != "fp32" and "CPU: float16 autocast forced on" not in (r.get("note") or ""):
                    found.append(f"{key}: a CPU fp16 row without its note: {r.get('note')!r}")
                if cpu_tiny and precision == "compiled" and "eager" not in (r.get("backend") or ""):
                    found.append(f"{key}: CPU compiled backend {r.get('backend')!r}")
    trains = {(r["model"], r["precision"]): r for r in rows if r.get("kind") == "train"}
    for model in gpu.TRAIN_MODELS:
        for precision in ("fp32", "fp16"):
            r = trains.get((model, precision))
            if r is None:
                found.append(f"missing training row {(model, precision)}")
            elif r.get("skipped") is not None:
                reason = r["skipped"]
                if not isinstance(reason, str) or not reason.strip():
                    found.append(f"training {(model, precision)} skipped without a reason")
                elif cpu_tiny and not (precision == "fp16" and "CUDA only" in reason):
                    found.append(f"training {(model, precision)} skipped: {reason}")
            elif not positive(r.get("step_ms")) or r.get("batch") != gpu.TRAIN_BATCH:
                found.append(f"training {(model, precision)}: step_ms {r.get('step_ms')!r}, batch {r.get('batch')!r}")
    for r in rows:  # whatever was skipped says why
        if r.get("skipped") is not None and (not isinstance(r["skipped"], str) or not r["skipped"].strip()):
            found.append(f"{r.get('kind')} {r.get('model')} {r.get('precision')} {r.get('batch')}: empty skip reason")
    dynamo = meta.get("dynamo") or {}
    if not dynamo.get("unique_graphs"):
        found.append(f"torch.compile traced no graph: {dynamo}")
    if dynamo.get("graph_breaks"):
        found.append(f"torch.compile graph breaks: {dynamo['graph_breaks']}")
    return found


def fake_report() -> dict:
    """A complete, valid report of the shape bench/gpu.py writes on the CPU at tiny sizes."""
    rows = []
    for model in gpu.MODEL_NAMES:
        for precision in gpu.PRECISIONS:
            for batch in gpu.BATCHES:
                loop_ms = 10.0 * batch
                rows.append({"kind": "loop", "model": model, "precision": precision, "batch": batch,
                             "features_ms": 2.0, "encode_ms": 6.0, "decode_ms": 1.0, "phosphene_ms": 1.0,
                             "loop_ms": loop_ms, "fps": batch * 1e3 / loop_ms, "reps": 2, "skipped": None,
                             "compile_s": 1.0 if precision == "compiled" else None,
                             "backend": "eager (CPU: ...)" if precision == "compiled" else "eager",
                             "note": "" if precision == "fp32" else "CPU: float16 autocast forced on (...)"})
    for model in gpu.TRAIN_MODELS:
        rows.append({"kind": "train", "model": model, "precision": "fp32", "batch": gpu.TRAIN_BATCH, "step_ms": 5.0,
                     "skipped": None})
        rows.append({"kind": "train", "model": model, "precision": "fp16", "batch": gpu.TRAIN_BATCH,
                     "skipped": "CPU: ... (fp16 autocast + GradScaler are CUDA only)"})
    return {"meta": {"dynamo": {"unique_graphs": 3, "graph_breaks": 0}, "interrupted": None}, "rows": rows}


def test_problems_finds_what_is_wrong():
    assert problems(fake_report()) == []
    report = fake_report()
    report["rows"] = [r for r in report["rows"] if (r["model"], r["precision"], r["batch"])
                      != ("unet_paper", "compiled", 32)]
    assert problems(report) == ["missing row ('unet_paper', 'compiled', 32)"]
    report = fake_report()
    report["rows"][4]["encode_ms"] = float("nan")  # (dit, fp16, batch 8)
    assert any("not finite positive" in p for p in problems(report))
    report = fake_report()
    report["rows"][0].update(skipped="time budget: ...")
    assert any("skipped" in p for p in problems(report))
    report = fake_report()
    next(r for r in report["rows"] if r["kind"] == "train" and r["precision"] == "fp16")["skipped"] = ""
    assert any("without a reason" in p for p in problems(report))
    report = fake_report()
    report["rows"] = [r for r in report["rows"] if not (r["kind"] == "train" and r["model"] == "unet_paper")]
    assert len([p for p in problems(report) if p.startswith("missing training row")]) == 2
    report = fake_report()
    next(r for r in report["rows"] if r["precision"] == "fp16")["note"] = ""  # a CPU fp16 row says it forced autocast
    assert any("without its note" in p for p in problems(report))
    report = fake_report()
    report["meta"]["dynamo"]["graph_breaks"] = 1
    assert any("graph breaks" in p for p in problems(report))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_full_sizes_need_a_gpu():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(BENCH)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "need a GPU" in proc.stderr and "--tiny" in proc.stderr


@pytest.mark.slow
def test_tiny_cpu_run(tmp_path):
    out = tmp_path / "gpu.json"
    md = tmp_path / "gpu.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--device", "cpu", "--threads", "1",
                           "--budget-s", "1200", "--json", str(out), "--md", str(md)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["meta"]["tiny"] is True and report["meta"]["device"] == "cpu"
    assert problems(report) == [], proc.stderr[-4000:]
    assert {r["signal"] for r in report["rows"] if r["model"] == "dit_paper_meg"} == {"meg"}
    text = md.read_text()
    assert text.strip() in proc.stdout
    for header in ("| model | signal | features | sampler | precision | features ms |",
                   "| model | precision | batch 1 | batch 8 | batch 32 |", "| model | signal | params (M) |"):
        assert header in text
    for name in gpu.MODEL_NAMES:
        assert f"| {name} |" in text
