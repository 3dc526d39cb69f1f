"""Every config group composes and instantiates from the installed `configs` package."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prosthesis_sim import configs
from prosthesis_sim.protocols import BrainDecoder, FeatureExtractor, FrameSource, ImageToBrainEncoder, PhospheneModel

PROTOCOL = {"decoder": BrainDecoder, "features": FeatureExtractor, "phosphene": PhospheneModel}

GROUPS = Path(configs.__file__).parent


def options(group):
    return sorted(p.stem for p in (GROUPS / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in ("dataset", "features", "encoder", "decoder", "phosphene", "source", "train"):
        assert options(group), f"configs/{group}/ is empty"


def declared_defaults(name: str) -> dict[str, str]:
    """The ``group: option`` entries of a config file's defaults list, following a parent config (demo
    extends loop), read from the YAML files themselves."""
    chosen = {}
    for entry in OmegaConf.load(GROUPS / f"{name}.yaml").get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            chosen.update(declared_defaults(entry))
        elif not isinstance(entry, str):
            (group, option), = entry.items()
            if (GROUPS / group).is_dir():  # not hydra/...
                chosen[group] = option
    return chosen


@pytest.mark.parametrize("app", ["train", "loop", "demo", "synth"])
def test_primary_configs_compose(app):
    """Each app's config composes with the options its defaults list names, and ``out`` is its run folder."""
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose(app, overrides=["out=somewhere"], return_hydra_config=True)
    chosen = declared_defaults(app)
    assert app == "synth" or {"dataset", "features", "encoder"} <= set(chosen), chosen
    for group, option in chosen.items():
        option_cfg = OmegaConf.load(GROUPS / group / f"{option}.yaml")
        if "_target_" in option_cfg:
            assert cfg[group]["_target_"] == option_cfg["_target_"], (group, option)
    assert cfg.hydra.run.dir == "somewhere" and cfg.hydra.output_subdir is None  # outputs land in out, only there


@pytest.mark.parametrize("encoder", options("encoder"))
@pytest.mark.parametrize("features", options("features"))
def test_encoders_instantiate(encoder, features):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("loop", overrides=[f"encoder={encoder}", f"features={features}"])
    enc = instantiate(cfg.encoder)
    assert isinstance(enc, ImageToBrainEncoder)
    if hasattr(enc, "features"):  # the encoder conditions on the extractor the config chose
        assert enc.features.cache_id.startswith(features)


@pytest.mark.parametrize("group", ["decoder", "features", "phosphene"])
def test_stage_groups_instantiate(group):
    for option in options(group):
        with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
            cfg = compose("loop", overrides=[f"{group}={option}"])
        assert isinstance(instantiate(cfg[group]), PROTOCOL[group]), (group, option)


def test_sources_instantiate(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    overrides = {"default": [], "images": [f"source.folder={tmp_path}"], "webcam": []}
    for option, extra in overrides.items():
        with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
            cfg = compose("loop", overrides=[f"source={option}", *extra])
        assert isinstance(instantiate(cfg.source), FrameSource), option


def test_dataset_instantiates(synth_root):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"dataset.root={synth_root}", "dataset.subject=2"])
    data = instantiate(cfg.dataset)
    assert data.subject == "sub-02" and data.train.shape[2:] == (63, 250)
