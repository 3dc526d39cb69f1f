#!/usr/bin/env bash
# Issue 22's GPU question in one run, for a lent GPU machine (the `device` tool): does a residual DiT
# trained longer than a CPU allows earn a validated residual gain at 1,654 training concepts, where
# kernel ridge beats ridge (docs/synthetic-data.md, "Version 3, calibrated")? On the CPU it earns none
# at 4,092 or 12,090 steps (bench/residual_headroom.py), so the GPU run goes to 24,000.
#
# Prepare as for bench/gpu_check.sh (`make gpu-wheels`; carry [".whl"]), then
#   bash bench/gpu_learning_curve.sh
# It synthesizes the 1,654-concept learning-curve dataset of the calibrated brain (about 2.5 min; too
# big to carry), fits ridge and dit_residual with GPU_LC_STEPS optimiser steps (default 24,000: twice
# the longest CPU run) on cuda, and writes the learning-curve table and JSON to $OUT (else outputs/gpu).
set -euo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg

VENV=/tmp/psim-gpu
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install -q --no-index --no-deps .whl/*.whl
    "$VENV/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
fi
PY="$VENV/bin/python"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/lc_machine.txt"
timeout -s TERM "${GPU_LC_TIMEOUT_S:-560}" "$PY" bench/learning_curve.py --concepts 1654 \
    --rows ridge dit_residual --structure things --dit-steps "${GPU_LC_STEPS:-24000}" --dit-max-concepts 0 \
    --device cuda --out /tmp/psim-lc --json "$OUT/learning_curve_1654_gpu.json" 2>&1 | tee "$OUT/learning_curve_1654_gpu.log"
