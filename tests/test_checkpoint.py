"""Fit caches keyed by what changes the fit only; atomic writes; save/load round trip."""
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from prosthesis_sim.checkpoint import atomic_write, atomic_write_text, fit_cached, fit_key, load_component, save_component


class Counter:
    """A tiny stand-in component: its fit depends on ``alpha`` and ``train.epochs`` only."""

    not_fitted = ("sampler", "device", "train.checkpoint_dir")
    fits = 0

    def __init__(self, alpha: float = 1.0, sampler: str = "ddim", device: str = "cpu", train=None, inner=None):
        self.alpha, self.sampler, self.device, self.train, self.inner = alpha, sampler, device, dict(train or {}), inner
        self.value = None

    def fit(self, data) -> None:
        Counter.fits += 1
        self.value = np.array([self.alpha * data.total * self.train.get("epochs", 1)], np.float32)

    def state(self):
        return {"value": self.value}, {"alpha": self.alpha}

    def load_state(self, arrays, meta) -> None:
        self.value = arrays["value"]


class Plain:
    """No ``not_fitted``: every argument counts."""

    def __init__(self, inner=None, sampler: str = "ddim"):
        self.inner, self.sampler = inner, sampler


class Data:
    def __init__(self, total: float):
        self.total = total

    def signature(self) -> str:
        return f"total={self.total}"


TARGET = f"{__name__}.Counter"


def component(out: str, **changes):
    """A root config like psim-loop's: ``train.checkpoint_dir`` interpolates ``${out}``."""
    cfg = OmegaConf.create({
        "out": out,
        "comp": {"_target_": TARGET, "alpha": 2.0, "sampler": "ddim", "device": "cpu",
                 "train": {"epochs": 3, "checkpoint_dir": "${out}/train_state"}},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg.comp


def test_output_folder_and_sampling_share_one_fit(tmp_path):
    Counter.fits = 0
    data = Data(5.0)
    first, directory = fit_cached(component("outputs/a"), data, tmp_path, "enc")
    again, same = fit_cached(component("outputs/b", **{"comp.sampler": "dpmsolver++", "comp.device": "cuda"}),
                             data, tmp_path, "enc")
    assert Counter.fits == 1 and same == directory
    assert again.sampler == "dpmsolver++" and again.device == "cuda"  # the current config, cached state
    assert again.train["checkpoint_dir"] == "outputs/b/train_state"
    np.testing.assert_array_equal(again.value, first.value)


def test_what_changes_the_fit_refits(tmp_path):
    Counter.fits = 0
    data = Data(5.0)
    _, base = fit_cached(component("o"), data, tmp_path, "enc")
    _, alpha = fit_cached(component("o", **{"comp.alpha": 3.0}), data, tmp_path, "enc")
    _, epochs = fit_cached(component("o", **{"comp.train.epochs": 4}), data, tmp_path, "enc")
    other, new_data = fit_cached(component("o"), Data(6.0), tmp_path, "enc")
    assert Counter.fits == 4 and len({base, alpha, epochs, new_data}) == 4
    assert other.value[0] == pytest.approx(2.0 * 6.0 * 3)


def test_nested_components_are_pruned_by_their_own_class():
    inner = {"_target_": TARGET, "alpha": 1.0, "sampler": "ddim", "train": {"epochs": 2, "checkpoint_dir": "x"}}
    key = fit_key({"_target_": f"{__name__}.Plain", "sampler": "ddim", "inner": inner})
    assert key == {"_target_": f"{__name__}.Plain", "sampler": "ddim",  # Plain keeps its sampler
                   "inner": {"_target_": TARGET, "alpha": 1.0, "train": {"epochs": 2}}}
    with pytest.raises(ValueError, match="no_such_module.Thing"):
        fit_key({"_target_": "no_such_module.Thing"})


def compose_loop(*overrides):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose("loop", overrides=list(overrides)).encoder


def test_diffusion_encoder_key_ignores_out_checkpoints_and_sampling():
    base = compose_loop("out=outputs/demo")
    moved = compose_loop("out=elsewhere", "encoder.sampler=dpmsolver++", "encoder.sampling_steps=5",
                         "encoder.guidance_scale=1.0", "encoder.n_samples=1", "encoder.sample_batch_size=8",
                         "encoder.device=cpu", "encoder.fp16=false", "train.checkpoint_every=10",
                         "train.resume=false")
    assert OmegaConf.to_container(base, resolve=True) != OmegaConf.to_container(moved, resolve=True)
    assert fit_key(base) == fit_key(moved)
    for change in ("train.epochs=3", "encoder.denoiser.hidden=64", "seed=1", "features.grid=2"):
        assert fit_key(compose_loop("out=outputs/demo", change)) != fit_key(base), change


def test_save_and_load_component_round_trip(tmp_path):
    obj = Counter(alpha=1.5, sampler="ddpm")
    obj.fit(Data(2.0))
    cfg = {"_target_": TARGET, "alpha": 1.5, "sampler": "ddpm"}
    save_component(obj, tmp_path / "c", cfg)
    back = load_component(tmp_path / "c")
    assert back.sampler == "ddpm" and back.value.tolist() == obj.value.tolist()
    (tmp_path / "c" / "weights.safetensors").unlink()  # an interrupted save: the weights come last
    with pytest.raises(FileNotFoundError, match="weights.safetensors is missing"):
        load_component(tmp_path / "c")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "good")

    def write(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, write)
    assert path.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


class Reader(Counter):
    """Also reads a file named in its config: the file's content is part of what it fits on."""

    @staticmethod
    def fit_inputs(config: dict) -> str:
        from pathlib import Path

        return Path(config["source"]).read_text()

    def __init__(self, source: str = "", **kwargs):
        super().__init__(**kwargs)
        self.source = source


def test_what_a_component_reads_besides_the_data_is_in_the_key(tmp_path):
    source = tmp_path / "gallery.txt"
    source.write_text("a")
    cfg = OmegaConf.create({"_target_": f"{__name__}.Reader", "source": str(source), "alpha": 1.0})
    Counter.fits = 0
    _, first = fit_cached(cfg, Data(1.0), tmp_path / "cache", "reader")
    _, same = fit_cached(cfg, Data(1.0), tmp_path / "cache", "reader")
    source.write_text("b")  # same config, other content: refit
    _, other = fit_cached(cfg, Data(1.0), tmp_path / "cache", "reader")
    assert first == same != other and Counter.fits == 2


def test_retrieval_gallery_files_are_its_fit_inputs(tmp_path):
    import cv2

    from prosthesis_sim.decoders.retrieval import RetrievalDecoder

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    cv2.imwrite(str(gallery / "a.png"), np.zeros((8, 8, 3), np.uint8))
    before = RetrievalDecoder.fit_inputs({"gallery": str(gallery)})
    cv2.imwrite(str(gallery / "b.png"), np.zeros((8, 8, 3), np.uint8))
    assert RetrievalDecoder.fit_inputs({"gallery": str(gallery)}) != before
    assert RetrievalDecoder.fit_inputs({"gallery": None}) == ""  # training images: in the data signature
