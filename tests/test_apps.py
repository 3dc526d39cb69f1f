"""The command-line apps run from any folder (configs ship inside the install) and write their outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


BIN = Path(sys.executable).parent


def run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_psim_synth_writes_things_format(tmp_path):
    out = tmp_path / "synth"
    run(["psim-synth", f"out={out}", "n_subjects=1", "n_train_concepts=3", "images_per_concept=2", "n_test=4",
         "test_reps=4", "image_size=32", "progress=false"], cwd=tmp_path)
    assert (out / "sub-01" / "preprocessed_eeg_training.npy").is_file()
    assert len(list((out / "images" / "training_images").glob("*/*.jpg"))) == 6


@pytest.mark.slow
def test_psim_train_writes_metrics(synth_root, tmp_path):
    out = tmp_path / "run"
    stdout = run(["psim-train", "encoder=ridge", "dataset=things_eeg2", f"dataset.root={synth_root}",
                  f"dataset.image_root={synth_root / 'images'}", "dataset.subject=2", f"out={out}"], cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("encoder", "mean_erp"):
        assert {"mse", "pcc", "top1", "top5", "pcc_channel"} <= set(metrics[name])
    assert 0 < metrics["noise_ceiling"]["noise_ceiling"] <= 1
    assert metrics["dataset"]["subject"] == "sub-02"
    assert metrics["encoder"]["top1"] > metrics["mean_erp"]["top1"]
    assert "RidgeEncoder" in stdout and (out / "encoder" / "weights.safetensors").is_file()


def test_psim_train_reports_bad_root(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(BIN / "psim-train"), "encoder=mean_erp", f"dataset.root={tmp_path / 'nowhere'}",
                           f"out={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "nowhere/sub-01" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("psim-train: ")


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(path / "encoder" / "weights.safetensors")


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(synth_root, tmp_path):
    """Kill psim-train mid-run, rerun it: the final weights equal those of an uninterrupted run; a rerun
    with other settings refuses the saved state."""
    import time

    args = ["encoder=dit", f"dataset.root={synth_root}", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1",
            "encoder.n_samples=1", "encoder.sampling_steps=2", "train.epochs=10", "train.batch_size=16",
            "train.checkpoint_every=20"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run(["psim-train", *args, f"out={tmp_path / 'whole'}"], cwd=tmp_path)

    state = tmp_path / "killed" / "train_state" / "train_state.pt"
    proc = subprocess.Popen([str(BIN / "psim-train"), *args, f"out={tmp_path / 'killed'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert state.is_file() and not (tmp_path / "killed" / "metrics.json").exists(), "the run was not killed midway"
    import torch

    step = torch.load(state, weights_only=False)["step"]
    assert 0 < step < 80  # 10 epochs of 120 images / 16
    stdout = run(["psim-train", *args, f"out={tmp_path / 'killed'}"], cwd=tmp_path)
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for k in whole:
        np.testing.assert_array_equal(whole[k], resumed[k], err_msg=k)
    assert "DiffusionEncoder" in stdout
    # the same folder with other settings: its saved state is refused, not resumed into a different run
    proc = subprocess.run([str(BIN / "psim-train"), *args, "train.lr=0.01", f"out={tmp_path / 'killed'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "train_state.pt holds a training run with other settings" in proc.stderr


