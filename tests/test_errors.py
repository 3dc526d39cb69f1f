"""Bad inputs give one message naming the culprit (file, field, value) through the one error layer.

Each test feeds one bad input (data files, saved components, configs, sources, outputs) and asserts
that the message the psim-* commands print names it. A few run the command itself (in process or as
a subprocess) to check the exit code and that no traceback is printed.
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from prosthesis_sim import apps
from prosthesis_sim.checkpoint import WEIGHTS, check_component_dir, fit_cached, load_component, save_component
from prosthesis_sim.data.things_eeg2 import load_things_eeg2
from prosthesis_sim.errors import ComponentError, ConfigError, PsimError, SourceError, describe
from prosthesis_sim.pipeline import run_configured_loop
from prosthesis_sim.sources import open_source
from prosthesis_sim.validate import check_output_folder, validate

BIN = Path(sys.executable).parent
APPS = {"loop": apps.loop, "train": apps.train, "synth": apps.synth, "report": apps.report, "demo": apps.demo}


def message(call, *args, **kwargs) -> str:
    """The one line the error layer prints for what ``call`` raises (it must be a known error)."""
    with pytest.raises(BaseException) as info:
        call(*args, **kwargs)
    known = describe(info.value)
    assert known is not None, f"not a known error: {info.value!r}"
    assert "\n" not in known[0] or len(known[0].splitlines()) <= 2, known[0]
    return known[0]


def run_app(app, argv, capsys) -> tuple[int, str]:
    """A psim-* command in this process (as its entry point runs it): (exit code, stderr)."""
    old = sys.argv
    sys.argv = [f"psim-{app}", *map(str, argv)]
    try:
        with pytest.raises(SystemExit) as info:
            APPS[app]()
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err and "Error executing job" not in err, err
    return info.value.code, err


def cli(*args, cwd, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PSIM_DEBUG", "HYDRA_FULL_ERROR")}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})})
    return subprocess.run([str(BIN / args[0]), *map(str, args[1:])], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def loop_cfg(*overrides, app="loop"):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose(app, overrides=list(overrides))


# --- data files ------------------------------------------------------------------------------------

@pytest.fixture
def root_copy(synth_root, tmp_path):
    """The synthetic dataset as symlinks, so one file can be replaced by a bad one."""
    root = tmp_path / "root"
    (root / "sub-01").mkdir(parents=True)
    (root / "images").symlink_to(synth_root / "images")
    for f in (synth_root / "sub-01").iterdir():
        (root / "sub-01" / f.name).symlink_to(f)
    return root


def replace_training(root, change):
    path = root / "sub-01" / "preprocessed_eeg_training.npy"
    obj = np.load(path, allow_pickle=True)  # a raw pickle behind a .npy name, as NICE writes it
    path.unlink()
    path.write_bytes(pickle.dumps(change(dict(obj))))
    return path


def test_missing_subject_folder(tmp_path):
    assert f"{tmp_path / 'sub-03'}" in message(load_things_eeg2, tmp_path, subject=3)


def test_data_file_that_is_not_a_pickle(root_copy):
    path = root_copy / "sub-01" / "preprocessed_eeg_training.npy"
    path.unlink()
    path.write_bytes(b"not a numpy file at all")
    assert str(path) in message(load_things_eeg2, root_copy)


def test_data_file_missing_a_field(root_copy):
    path = replace_training(root_copy, lambda d: {k: v for k, v in d.items() if k != "times"})
    text = message(load_things_eeg2, root_copy)
    assert str(path) in text and "times" in text


def test_data_holding_nan(root_copy):
    def poison(d):
        d["preprocessed_eeg_data"] = np.array(d["preprocessed_eeg_data"], copy=True)
        d["preprocessed_eeg_data"][2, 0, 5, 7] = np.nan
        return d

    text = message(load_things_eeg2, replace_training(root_copy, poison).parent.parent)
    assert "preprocessed_eeg_training.npy" in text and "NaN" in text and "(2, 0, 5, 7)" in text


def test_data_with_the_wrong_number_of_dimensions(root_copy):
    def flatten(d):
        d["preprocessed_eeg_data"] = np.asarray(d["preprocessed_eeg_data"])[:, 0]
        return d

    text = message(load_things_eeg2, replace_training(root_copy, flatten).parent.parent)
    assert "preprocessed_eeg_training.npy" in text and "4-D" in text


def test_missing_image_folder(synth_root, tmp_path):
    text = message(load_things_eeg2, synth_root, image_root=tmp_path / "no-images")
    assert str(tmp_path / "no-images") in text


# --- saved components ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_dit(small_data, tmp_path_factory):
    """A tiny trained DiT encoder saved as psim-train saves it."""
    cfg = loop_cfg("encoder=dit", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "encoder.n_samples=1",
                   "encoder.sampling_steps=2", "train.epochs=1", "train.checkpoint_dir=null", "encoder.device=cpu")
    encoder = instantiate(cfg.encoder)
    encoder.fit(small_data)
    return save_component(encoder, tmp_path_factory.mktemp("dit") / "encoder", cfg.encoder, small_data.epoch)


def copy_component(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_weights_name_the_file(saved_dit, small_data, tmp_path):
    bad = copy_component(saved_dit, tmp_path / "enc")
    data = (bad / WEIGHTS).read_bytes()
    for size in (1000, len(data) // 2):  # a cut header, then cut arrays
        (bad / WEIGHTS).write_bytes(data[:size])
        text = message(load_component, bad, small_data)
        assert str(bad / WEIGHTS) in text and "truncated" in text


def test_config_not_matching_weights_is_one_message(saved_dit, small_data, tmp_path):
    bad = copy_component(saved_dit, tmp_path / "enc")
    (bad / "config.yaml").write_text((bad / "config.yaml").read_text().replace("hidden: 32", "hidden: 64"))
    text = message(load_component, bad, small_data)
    assert str(bad) in text and "tensors differ in shape" in text and "config builds" in text
    assert len(text.splitlines()) == 1 and "size mismatch" not in text


def test_config_naming_an_unknown_class(saved_dit, small_data, tmp_path):
    bad = copy_component(saved_dit, tmp_path / "enc")
    (bad / "config.yaml").write_text((bad / "config.yaml").read_text().replace(
        "prosthesis_sim.encoders.diffusion.DiffusionEncoder", "prosthesis_sim.encoders.nowhere.Gone"))
    text = message(load_component, bad, small_data)
    assert str(bad / "config.yaml") in text and "encoders.nowhere" in text


def test_weights_missing_an_entry(small_data, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, folder = fit_cached(loop_cfg("encoder=mean_erp").encoder, small_data, tmp_path, "enc")
    arrays = load_file(folder / WEIGHTS)
    save_file({k: v for k, v in arrays.items() if k != "erp"}, folder / WEIGHTS)
    text = message(load_component, folder)
    assert str(folder / WEIGHTS) in text and "erp" in text


def test_corrupt_fit_cache_entry_names_the_file(small_data, tmp_path):
    cfg = loop_cfg("encoder=mean_erp").encoder
    _, folder = fit_cached(cfg, small_data, tmp_path, "floor")
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:40])
    text = message(fit_cached, cfg, small_data, tmp_path, "floor")
    assert str(folder / WEIGHTS) in text and "delete it" in text


def test_encoder_dir_that_is_not_a_saved_component(tmp_path):
    assert f"encoder_dir={tmp_path / 'none'}: no such folder" in message(check_component_dir, tmp_path / "none",
                                                                         "encoder_dir")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("_target_: prosthesis_sim.encoders.mean_erp.MeanERP\n")
    assert "weights.safetensors is missing" in message(check_component_dir, tmp_path / "half", "encoder_dir")


# --- config values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, named, expected", [
    ("loop.queue_size=-1", "loop.queue_size=-1", "integer >= 1"),
    ("loop.queue_size=abc", "loop.queue_size='abc'", "integer >= 1"),
    ("loop.max_frames=0", "loop.max_frames=0", "integer >= 1 or null"),
    ("loop.display=maybe", "loop.display='maybe'", "one of auto, true, false"),
    ("loop.realtime=yes", "loop.realtime='yes'", "true or false"),
    ("loop.panel_size=100", "loop.panel_size=100", ">= 160"),
    ("train.epochs=2.5", "train.epochs=2.5", "integer >= 1"),
    ("source.fps=0", "source.fps=0", "number > 0"),
])
def test_bad_loop_config_values(override, named, expected):
    text = message(validate, loop_cfg(override), "loop")
    assert named in text and expected in text


def test_nested_epochs_are_checked_where_they_are():
    text = message(validate, loop_cfg("decoder=embedding", "decoder.epochs=-3"), "loop")
    assert "decoder.epochs=-3" in text


def test_missing_mandatory_value_names_the_override():
    text = message(validate, loop_cfg("source=video"), "loop")
    assert "source.path" in text and "source.path=..." in text


def test_synth_modality_choice():
    assert "modality='fmri': expected one of eeg, meg" in message(validate, loop_cfg("out=x", "modality=fmri",
                                                                                    app="synth"), "synth")


def test_every_shipped_config_is_valid():
    from prosthesis_sim.validate import SCHEMAS

    for app in SCHEMAS:
        extra = {"synth": ["out=x"], "report": ["runs=[a]", "out=b"]}.get(app, [])
        validate(loop_cfg(*extra, app=app), app)
    for group in ("encoder", "decoder", "source", "train", "features", "phosphene"):
        for option in (Path(__import__("configs").__file__).parent / group).glob("*.yaml"):
            extra = {"video": ["source.path=x.mp4"], "images": ["source.folder=x"]}.get(option.stem, [])
            validate(loop_cfg(f"{group}={option.stem}", *extra), "loop")


def test_train_epochs_abc_stops_before_the_data_loads(tmp_path, capsys):
    code, err = run_app("train", ["train.epochs=abc", f"dataset.root={tmp_path / 'nowhere'}",
                                  f"out={tmp_path / 'run'}"], capsys)
    assert code == 2 and "train.epochs='abc': expected an integer >= 1" in err and "nowhere" not in err


def test_unknown_key_is_one_line(tmp_path, capsys):
    code, err = run_app("loop", ["loop.speed=3", f"out={tmp_path}"], capsys)
    assert code == 2 and "loop.speed" in err and len(err.strip().splitlines()) == 1


def test_unknown_config_option(tmp_path, capsys):
    code, err = run_app("loop", ["encoder=nope", f"out={tmp_path}"], capsys)
    assert code == 2 and "nope" in err and "encoder" in err


# --- sources ---------------------------------------------------------------------------------------

def test_missing_video_file(tmp_path):
    assert f"source.path={tmp_path / 'gone.mp4'}" in message(
        lambda: instantiate(loop_cfg("source=video", f"source.path={tmp_path / 'gone.mp4'}").source))


def test_file_that_is_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("hello")
    assert f"source.path={tmp_path / 'notes.mp4'}" in message(
        lambda: open_source(instantiate(loop_cfg("source=video", f"source.path={tmp_path / 'notes.mp4'}").source)))


def test_empty_image_folder(tmp_path):
    assert f"source.folder={tmp_path}" in message(
        lambda: instantiate(loop_cfg("source=images", f"source.folder={tmp_path}").source))


def test_one_pixel_image_is_refused_by_name(tmp_path):
    cv2.imwrite(str(tmp_path / "dot.png"), np.full((1, 1, 3), 128, np.uint8))
    text = message(lambda: open_source(instantiate(loop_cfg("source=images", f"source.folder={tmp_path}").source)))
    assert str(tmp_path / "dot.png") in text and "1 x 1 pixels" in text


def test_missing_camera_stops_before_models_load(tmp_path, monkeypatch):
    from prosthesis_sim import pipeline

    monkeypatch.setattr(pipeline, "build_loop", lambda cfg: pytest.fail("models loaded before the source was checked"))
    cfg = loop_cfg("source=webcam", "source.index=9", f"out={tmp_path / 'run'}", "loop.display=false")
    text = message(run_configured_loop, cfg)
    assert "source.index=9: cannot open the camera" in text
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# --- outputs and displays --------------------------------------------------------------------------

def read_only_folder(tmp_path) -> Path:
    """A folder this process cannot write: chmod for a normal user; root ignores modes, so a sysfs folder."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/kernel")
    try:
        (folder / "psim-write-test").touch()
    except OSError:
        return folder
    (folder / "psim-write-test").unlink()
    pytest.skip("no read-only folder available to root")


def test_out_that_is_a_file(tmp_path, monkeypatch):
    from prosthesis_sim import pipeline

    monkeypatch.setattr(pipeline, "build_loop", lambda cfg: pytest.fail("models loaded before out was checked"))
    (tmp_path / "taken").write_text("x")
    text = message(run_configured_loop, loop_cfg(f"out={tmp_path / 'taken'}", "loop.display=false"))
    assert f"out={tmp_path / 'taken'}: exists and is not a folder" in text


def test_read_only_out_folder_in_the_loop(tmp_path):
    folder = read_only_folder(tmp_path)
    text = message(check_output_folder, folder)
    assert f"out={folder}: cannot write" in text


def test_display_asked_for_without_one(tmp_path, monkeypatch):
    from prosthesis_sim import pipeline

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(pipeline, "build_loop", lambda cfg: pytest.fail("models loaded before the display check"))
    text = message(run_configured_loop, loop_cfg(f"out={tmp_path}", "loop.display=true"))
    assert "loop.display=true" in text


# --- the command line: exit codes, no traceback, the debug switch ----------------------------------

def test_cli_read_only_out_is_one_line(tmp_path):
    folder = read_only_folder(tmp_path)
    proc = cli("psim-loop", f"out={folder}", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and str(folder) in proc.stderr and "writable" in proc.stderr


def test_cli_bad_value_exits_2_without_traceback(tmp_path):
    proc = cli("psim-loop", "loop.queue_size=-1", f"out={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "psim-loop: bad config value: loop.queue_size=-1: expected an integer >= 1"


def test_cli_missing_camera_without_traceback(synth_root, tmp_path):
    proc = cli("psim-loop", "source=webcam", "source.index=9", f"dataset.root={synth_root}", f"out={tmp_path}",
               "loop.display=false", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("psim-loop: source.index=9: cannot open the camera")


def test_psim_debug_shows_the_traceback(tmp_path):
    proc = cli("psim-report", f"runs={tmp_path / 'none'}", f"out={tmp_path / 'r'}", cwd=tmp_path,
               env_extra={"PSIM_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and str(tmp_path / "none") in proc.stderr
    quiet = cli("psim-report", f"runs={tmp_path / 'none'}", f"out={tmp_path / 'r'}", cwd=tmp_path)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr and str(tmp_path / "none") in quiet.stderr


def test_bugs_keep_their_traceback():
    assert describe(TypeError("unsupported operand")) is None and describe(KeyError("x")) is None
    assert describe(ConfigError("a=b: expected c"))[1] == 2 and describe(SourceError("s"))[1] == 1
    assert isinstance(ComponentError("x"), PsimError)
