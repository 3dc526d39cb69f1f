"""The command-line apps run from any folder (configs ship inside the install) and write their outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path


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
                           f"out={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "nowhere/sub-01" in proc.stderr
