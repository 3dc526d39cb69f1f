#!/usr/bin/env bash
# Every GPU measurement of the project in one run, for a lent GPU machine (the `device` tool).
#
# The device image has python3 with CUDA torch but not this project's other packages, and nothing
# can be downloaded there. Prepare here once with `make gpu-wheels` (the wheels the image lacks go
# to .whl/, ignored by git), then call the device tool with carry [".whl"] and the command
#   bash bench/gpu_check.sh
# Results go to $OUT (the device tool's folder that comes back), else outputs/gpu.
set -euo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg

VENV=/tmp/psim-gpu
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --no-index --no-deps .whl/*.whl
"$VENV/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
PY="$VENV/bin/python"
{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    2>&1 | tee "$OUT/machine.txt"

# Phosphene renderer: pulse2percept vs torch on CPU and CUDA (fp32, fp16), batch 1 and 64, and
# 10,000 phosphenes at 256 x 256 (the >= 300 percepts/s target).
"$PY" bench/phosphenes.py --json "$OUT/phosphenes.json" 2>&1 | tee "$OUT/phosphenes.md"

# The GPU path (bench/gpu.py): per-stage loop latency and fps at batch 1, frames/s at batches 8 and 32,
# of the default DiT, dit_paper (EEG and MEG, clip_text tokens) and unet_paper, in fp32, fp16 and
# compiled with CUDA graphs, plus one training step of each paper config; random weights, nothing
# downloaded. Its budget (rows that would start after GPU_BENCH_BUDGET_S are recorded as skipped)
# keeps it under 5 min; `timeout` stops a row that runs far past it, and the rows measured by then
# are still printed and saved (exit 3). The README's GPU table is $OUT/gpu.md.
timeout -s TERM "${GPU_BENCH_TIMEOUT_S:-420}" "$PY" bench/gpu.py --budget-s "${GPU_BENCH_BUDGET_S:-270}" \
    --json "$OUT/gpu.json" --md "$OUT/gpu.md" 2>&1 | tee "$OUT/gpu.log"
