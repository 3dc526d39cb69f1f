"""bench/gpu.py's settings and models: every model of the GPU bench built from the repository's
classes and configs with random weights of the right shapes (CLIP ViT-L/14 or a tiny stand-in, the
diffusion encoders with a ridge mean where the config has one, ridge_pixels, the torch phosphene
renderer). Nothing is fitted or downloaded; see bench/gpu.py for what is timed."""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages first
    sys.path.insert(0, str(ROOT))

PAPER_STEPS = 4  # DDIM, trailing spacing: the paper configs' 50 / 1000 steps are not a live loop
SIGNALS = {"eeg": (63, 250), "meg": (271, 201)}
TINY_SIGNALS = {"eeg": (8, 50), "meg": (12, 50)}  # two 25-sample time patches
FRAME_SIZE = 224
TINY_SAMPLES = 2  # --tiny: samples per frame at most (the configs' 8 are 4x the CPU time for the same code)

# (model, encoder config, feature extractor, signal, DDIM steps replacing the config's or None)
SPECS = {
    "dit": ("dit_residual", "gabor", "eeg", None),
    "dit_paper_eeg": ("dit_paper", "clip_text", "eeg", PAPER_STEPS),
    "dit_paper_meg": ("dit_paper", "clip_text", "meg", PAPER_STEPS),
    "unet_paper": ("unet_paper", "clip", "eeg", PAPER_STEPS),
}

# CLIP ViT-L/14 (openai/clip-vit-large-patch14) and a tiny stand-in with the same structure.
CLIP_SIZES = {
    False: dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            patch_size=14, image_size=224),
                text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=77),
                projection_dim=768),
    True: dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=14, image_size=28),
               text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77),
               projection_dim=16),
}
TINY_DENOISERS = {
    "prosthesis_sim.encoders.dit.DiT": dict(hidden=32, depth=2, heads=2),
    "prosthesis_sim.encoders.unet.UNetDenoiser": dict(block_out_channels=[8, 16, 32, 32], norm_num_groups=8, cross_attention_dim=32,
                                       layers_per_block=1),
}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- settings and models ----------------------------------------------------------------------------


@dataclass
class Settings:
    device: torch.device
    tiny: bool
    budget_s: float
    reps: int | None
    cpu_compile: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, times: dict, name: str, fn):
        """``fn()``, its wall time in ms stored as ``times[name]``, synchronised on both sides (CUDA)."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        times[name] = 1e3 * (time.perf_counter() - start)
        return out


def char_tokenizer():
    """A CLIP tokenizer with one token per character (the BPE vocabulary and merges are a download)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,'-!?":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    try:
        return CLIPTokenizer(vocab=vocab, merges=[]), len(vocab)  # transformers 5
    except TypeError:  # transformers 4: from files
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="psim-tokenizer-"))
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")), len(vocab)


def image_processor(size: int):
    """CLIP's image processor (resize shortest edge, centre crop, OpenAI mean/std) at ``size``: the
    torchvision one when torchvision is installed, else the PIL one (what AutoImageProcessor picks)."""
    kwargs = dict(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if importlib.util.find_spec("torchvision") is None:
        try:  # transformers 5 without torchvision: the PIL one (CLIPImageProcessor would warn and use it)
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

            return CLIPImageProcessorPil(**kwargs)
        except ImportError:  # transformers 4: CLIPImageProcessor is the PIL/numpy one
            pass
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(**kwargs)


class ClipBundle:
    """A random-weight CLIP (vision + text, ViT-L/14 shapes or tiny) in float32 and float16, and the
    feature extractors of the configs (``ClipImageTextFeatures`` for clip_text, ``ClipFeatures`` for
    clip) wrapped around them without loading anything."""

    def __init__(self, settings: Settings):
        from transformers import CLIPConfig, CLIPModel

        size = CLIP_SIZES[settings.tiny]
        tokenizer, vocab = char_tokenizer()
        text = dict(size["text"], vocab_size=vocab if settings.tiny else 49408, bos_token_id=0, eos_token_id=1,
                    pad_token_id=1)
        self.config = CLIPConfig(text_config=text, vision_config=size["vision"], projection_dim=size["projection_dim"])
        torch.manual_seed(0)
        with torch.device(settings.device):
            clip32 = CLIPModel(self.config).eval()
        self.params = {"vision": sum(p.numel() for p in clip32.vision_model.parameters()),
                       "text": sum(p.numel() for p in clip32.text_model.parameters())}
        self.models = {"float32": clip32, "float16": copy.deepcopy(clip32).half()}  # + "compiled" (compile())
        self.processor = image_processor(size["vision"]["image_size"])
        self.tokenizer = tokenizer
        self.settings = settings
        vision_config = copy.deepcopy(self.config.vision_config)
        vision_config.projection_dim = self.config.projection_dim
        self.vision_config = vision_config
        self.towers = {variant: self._tower(clip) for variant, clip in self.models.items()}

    def _tower(self, clip):
        """``CLIPVisionModelWithProjection`` (what ClipFeatures loads) sharing ``clip``'s vision weights."""
        from transformers import CLIPVisionModelWithProjection

        with torch.device("meta"):
            tower = CLIPVisionModelWithProjection(self.vision_config)
        tower.vision_model, tower.visual_projection = clip.vision_model, clip.visual_projection
        return tower.eval()

    def extractor(self, kind: str, variant: str):
        """The features config ``kind`` (clip | clip_text) with the random model ``variant`` inside:
        float32, float16, or compiled (float16, towers compiled; after ``compile``)."""
        from prosthesis_sim.features.captions import ConceptCaptions
        from prosthesis_sim.features.clip import ClipFeatures
        from prosthesis_sim.features.multimodal import ClipImageTextFeatures

        device = str(self.settings.device)
        if kind == "clip_text":
            ext = ClipImageTextFeatures("random-clip-vit-large-patch14", captions=ConceptCaptions(), device=device,
                                        max_text_tokens=77)
            ext._model, ext._tokenizer = self.models[variant], self.tokenizer
        elif kind == "clip":
            ext = ClipFeatures("random-clip-vit-large-patch14", device=device)
            ext._model = self.towers[variant]
        else:
            raise ValueError(kind)
        ext._processor = self.processor
        # set after construction: ClipFeatures refuses float16 on the CPU, and the bench runs it there
        ext.dtype = "float32" if variant == "float32" else "float16"
        return ext

    def compile(self, compile_fn) -> None:
        """A float16 copy whose vision and text towers are compiled (the eager float16 one is kept)."""
        if "compiled" in self.models:
            return
        clip = copy.deepcopy(self.models["float16"])
        clip.vision_model = compile_fn(clip.vision_model)
        clip.text_model = compile_fn(clip.text_model)
        self.models["compiled"] = clip
        self.towers["compiled"] = self._tower(clip)


def load_yaml(group: str, name: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / group / f"{name}.yaml")
    return OmegaConf.to_container(cfg, resolve=False)


def random_normalizer(n_channels: int):
    from prosthesis_sim.data.dataset import Normalizer

    return Normalizer(np.zeros((n_channels, 1), np.float32), np.ones((n_channels, 1), np.float32))


def make_denoiser(cfg: dict, tiny: bool):
    """The config's denoiser class and keyword arguments (shrunk with ``tiny``), as a partial."""
    from hydra.utils import get_class

    kwargs = {k: v for k, v in cfg["denoiser"].items() if k not in ("_target_", "_partial_")}
    target = cfg["denoiser"]["_target_"]
    if tiny:
        kwargs.update(TINY_DENOISERS[target])
    return functools.partial(get_class(target), **kwargs)


def synthetic_montage(n_channels: int, rng: np.random.Generator) -> tuple[list[int], list[list[float]]]:
    """Brain-region ids and sensor positions of the right counts (the values do not change the cost)."""
    xyz = rng.normal(size=(n_channels, 3))
    xyz = 0.09 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    return [i % 6 for i in range(n_channels)], xyz.round(6).tolist()


@dataclass
class Model:
    """One benchmarked configuration: its extractors per dtype, the encoder, decoder and renderer."""
    name: str
    config: str
    features_kind: str
    signal: str
    shape: tuple[int, int]
    encoder: object
    extractors: dict  # precision (fp32, fp16, compiled) -> extractor
    decoder: object
    phosphene: object
    params: int
    sampler_text: str
    eager_model: torch.nn.Module
    compiled_model: torch.nn.Module | None = None


def build_model(name: str, settings: Settings, clip: ClipBundle | None, phosphene, gabor) -> Model:
    from prosthesis_sim.decoders.ridge_pixels import RidgePixels
    from prosthesis_sim.encoders.diffusion import DiffusionEncoder
    from prosthesis_sim.encoders.ridge import RidgeEncoder
    from prosthesis_sim.features.cache import features_for_images

    config, features_kind, signal, steps = SPECS[name]
    cfg = load_yaml("encoder", config)
    shape = (TINY_SIGNALS if settings.tiny else SIGNALS)[signal]
    rng = np.random.default_rng(0)
    if features_kind == "gabor":
        extractors = {"fp32": gabor, "fp16": gabor, "compiled": gabor}
    else:  # the compiled one is added by compile_model
        extractors = {"fp32": clip.extractor(features_kind, "float32"), "fp16": clip.extractor(features_kind, "float16")}
    partial = make_denoiser(cfg, settings.tiny)
    keys = ("inputs", "num_train_timesteps", "beta_schedule", "prediction_type", "sampler", "sampling_steps",
            "timestep_spacing", "guidance_scale", "n_samples", "sample_batch_size", "fp16", "whiten")
    kwargs = {k: cfg[k] for k in keys if k in cfg}
    if steps is not None:
        kwargs.update(sampler="ddim", sampling_steps=steps, timestep_spacing="trailing")
    if settings.tiny:  # fewer samples per frame: the same code path (guidance too) at a quarter of the CPU time
        kwargs["n_samples"] = min(kwargs.get("n_samples", 1), TINY_SAMPLES)
    mean_model = None
    if cfg.get("mean_model"):
        mean_model = RidgeEncoder(features=gabor if features_kind == "gabor" else extractors["fp32"],
                                  inputs=cfg["mean_model"].get("inputs", "auto"))
    enc = DiffusionEncoder(partial, extractors["fp32"], device=str(settings.device), seed=0,
                           mean_model=mean_model, **kwargs)
    frame = rng.integers(0, 256, (FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    feats = features_for_images(extractors["fp32"], [frame], tokens=True)
    n_ch, n_t = shape
    pooled_dim = feats.pooled.shape[1]
    # 'pooled': the pooled vector is the only token
    n_tokens, token_dim = feats.tokens.shape[1:] if enc.inputs == "tokens" else (1, pooled_dim)
    regions, positions = synthetic_montage(n_ch, rng)
    torch.manual_seed(0)
    with torch.device(settings.device):
        enc.build_untrained(n_ch, n_t, n_tokens, token_dim, pooled_dim, random_normalizer(n_ch), regions, positions)
    if mean_model is not None:  # ridge on the same features, random coefficients (DiffusionEncoder residual mode)
        from prosthesis_sim.encoders.ridge import design_matrix, resolve_inputs

        used = resolve_inputs(mean_model.inputs, feats.tokens.shape[1:])
        d = design_matrix(feats, used).shape[1]
        mean_model.load_state(
            {"coef": (0.01 * rng.standard_normal((d, n_ch * n_t))).astype(np.float32),
             "intercept": np.zeros(n_ch * n_t, np.float32), "x_mean": np.zeros(d), "x_std": np.ones(d),
             **enc.norm.state_dict()},
            {"alpha": 1.0, "shape": [n_ch, n_t], "inputs_used": used})
    dec_cfg = load_yaml("decoder", "ridge_pixels")
    decoder = RidgePixels(size=dec_cfg["size"], time_bin=dec_cfg["time_bin"])
    n_in = n_ch * (n_t // decoder.time_bin)
    decoder.load_state({"coef": (rng.standard_normal((n_in, int(np.prod(decoder.size)))) / np.sqrt(n_in)).astype(
        np.float32), "intercept": np.full(int(np.prod(decoder.size)), 0.5, np.float32), **enc.norm.state_dict()},
        {"alpha": 1.0})
    guided = "" if enc.guidance_scale == 1.0 else f", guidance {enc.guidance_scale:g}"
    config_steps = f" (config: {cfg['sampler']} {cfg['sampling_steps']})" if steps else ""
    config_samples = f" (config: {cfg['n_samples']})" if enc.n_samples != cfg["n_samples"] else ""
    sampler_text = f"{enc.sampler} {enc.sampling_steps}{config_steps} x {enc.n_samples} sample{'s' * (enc.n_samples != 1)}{config_samples}{guided}"
    return Model(name, config, features_kind, signal, shape, enc, extractors, decoder, phosphene,
                 sum(p.numel() for p in enc.model.parameters()), sampler_text, enc.model)


def build_phosphene(settings: Settings):
    import hydra
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "phosphene" / "torch_argus.yaml")
    cfg.cache_dir, cfg.device, cfg.dtype = None, str(settings.device), "float32"
    return hydra.utils.instantiate(cfg).build()


def build_gabor():
    import hydra
    from omegaconf import OmegaConf

    return hydra.utils.instantiate(OmegaConf.load(ROOT / "configs" / "features" / "gabor.yaml"))
