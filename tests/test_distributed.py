"""Data-parallel training under torchrun (2 CPU processes, gloo) gives the single-process result."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from safetensors import safe_open

from prosthesis_sim import distributed

from .test_apps import BIN, _weights, run

pytestmark = pytest.mark.slow  # trains models: make test-fast leaves this module out


def _meta(out):
    with safe_open(out / "encoder" / "weights.safetensors", framework="np") as f:
        return json.loads(f.metadata()["meta"])


def test_two_processes_train_the_same_weights_as_one(synth_root, tmp_path):
    # dit_paper: cross-attention only, so the pooled projection is never used (DDP must allow that)
    args = ["encoder=dit_paper", f"dataset.root={synth_root}", "encoder.denoiser.hidden=32",
            "encoder.denoiser.depth=1", "encoder.denoiser.heads=2", "encoder.denoiser.patch=[8,25]",
            "encoder.n_samples=1", "encoder.sampling_steps=2", "train.epochs=3", "encoder.device=cpu",
            # 120 signals in batches of 17: the last batch of each epoch holds 1, so one process has none
            "train.batch_size=17", "train.checkpoint_every=7"]
    run(["psim-train", *args, f"out={tmp_path / 'one'}"], cwd=tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "psim-train"),
                           *args, f"out={tmp_path / 'two'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("DiffusionEncoder") == 1, "only the main process should report"

    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:  # the same gradients summed in another order: equal to float32 rounding
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-5, err_msg=k)
    meta1, meta2 = _meta(tmp_path / "one"), _meta(tmp_path / "two")
    assert (meta1["train_processes"], meta2["train_processes"]) == (1, 2)
    # batches of 17 split 9 + 8, the last (1) 1 + 0: the main process saw just over half
    assert meta1["rank_samples"] / 2 <= meta2["rank_samples"] < meta1["rank_samples"] * 0.55
    # and the main process evaluates the model it trained: the same scores as the one-process run's
    scores = [json.loads((tmp_path / run / "metrics.json").read_text())["encoder"] for run in ("one", "two")]
    assert scores[0].keys() == scores[1].keys() and {"mse", "pcc", "top1"} <= scores[1].keys()
    for k in ("mse", "pcc", "top1", "top5"):
        assert scores[1][k] == pytest.approx(scores[0][k], rel=1e-3, abs=1e-4), k


def test_context_outside_torchrun_is_a_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.context()
    assert (ctx.rank, ctx.world, ctx.main) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.context()


def test_each_process_gets_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device("cuda") == torch.device("cuda", 1)
    assert distributed.local_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK 2 has no GPU of its own .2 visible.*nproc_per_node 2"):
        distributed.local_device("cuda")
