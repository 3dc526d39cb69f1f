"""CLIP ViT image features, the paper's conditioning (CLIP ViT-L/14), loaded strictly offline."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from prosthesis_sim.distributed import local_device
from prosthesis_sim.protocols import Features

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ClipWeightsNotFound(FileNotFoundError):
    """The CLIP checkpoint is neither a local folder nor in the Hugging Face cache."""


# Weights of a full CLIPModel checkpoint that the vision tower does not use: expected, not reported.
TEXT_TOWER_KEYS = {r"^text_model\.", r"^text_projection\.", r"^logit_scale$"}


class ClipFeatures:
    """tokens = the vision transformer's last hidden state (n, 1 + n_patches, hidden), i.e.
    (n, 257, 1024) for ViT-L/14; pooled = the projected image embedding (n, projection_dim), i.e.
    (n, 768) for ViT-L/14.

    ``model`` is a Hugging Face model id (looked up in the local cache only) or a folder holding the
    ``save_pretrained()`` output of a full ``CLIPModel`` (what the hub holds) or of a
    ``CLIPVisionModelWithProjection``, with the image processor. Only the vision tower is loaded,
    without a report of the unused text weights. The model is loaded on the first call, so building
    configs and pipelines stays cheap. ``tokens=False`` skips copying out the token sequence (for
    encoders that use the pooled vector only, see ``cached_features``).
    """

    skips_tokens = True  # __call__(images, tokens=False) returns pooled vectors only
    not_fitted = ("device", "batch_size", "local_files_only")  # where and how it runs: a fit on it is the same

    def __init__(
        self,
        model: str = "openai/clip-vit-large-patch14",
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 16,
        local_files_only: bool = True,
    ):
        if device == "auto":  # the encoder's default: run CLIP where the diffusion model runs
            device = local_device(device)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if dtype != "float32" and not str(device).startswith("cuda"):
            raise ValueError(f"dtype {dtype!r} is for CUDA devices; use float32 on {device!r}")
        self.model = str(model)
        self.device = str(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.local_files_only = bool(local_files_only)
        # A local folder is keyed by its absolute path so that relative paths cannot collide.
        source = str(Path(self.model).resolve()) if Path(self.model).is_dir() else self.model
        self.cache_id = f"clip-{source}-{dtype}"
        self._model = None
        self._processor = None

    @property
    def weights_id(self) -> str:
        """A fingerprint of the checkpoint's files (weights, configs), added to the feature cache key,
        so that new weights in the same folder compute features afresh (see ``weights_fingerprint``)."""
        return weights_fingerprint(self.model)

    def _load(self) -> None:
        from transformers import AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(self.model, local_files_only=self.local_files_only)
        except (OSError, ValueError) as err:
            raise ClipWeightsNotFound(_missing_message(self.model, err)) from err
        model = load_vision_tower(self.model, self.local_files_only, _DTYPES[self.dtype])
        self._processor = processor
        self._model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray], tokens: bool = True) -> Features:
        if self._model is None:
            self._load()
        hidden, pooled = [], []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(img) for img in images[start : start + self.batch_size]]
            pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
            out = self._model(pixel_values=pixels.to(self.device, _DTYPES[self.dtype]))
            if tokens:
                hidden.append(out.last_hidden_state.float().cpu().numpy())
            pooled.append(out.image_embeds.float().cpu().numpy())
        if not pooled:  # no images: shapes from the config, without running the model
            return self.empty() if tokens else Features(np.zeros((0, 0, 0), np.float32), self.empty().pooled)
        pooled = np.concatenate(pooled)
        if not tokens:
            return Features(np.zeros((len(pooled), 0, 0), np.float32), pooled)
        return Features(np.concatenate(hidden), pooled)

    def empty(self) -> Features:
        """Features of no images, i.e. the shapes, from the config alone (no weights loaded)."""
        cfg = self._model.config if self._model is not None else vision_config(self.model, self.local_files_only)
        n_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        return Features(np.zeros((0, n_tokens, cfg.hidden_size), np.float32),
                        np.zeros((0, cfg.projection_dim), np.float32))

    def __repr__(self) -> str:
        return f"ClipFeatures({self.cache_id}, device={self.device})"


def vision_config(model: str, local_files_only: bool = True):
    """The ``CLIPVisionConfig`` of a full ``CLIPModel`` checkpoint or of a vision-only one.

    A full checkpoint keeps the projection size on the outer config (its vision config says the
    default 512), so it is copied over. Raises ClipWeightsNotFound when the config is not found and
    ValueError for a config of another model type, naming ``model``.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise ClipWeightsNotFound(_missing_message(model, err)) from err
    if config.model_type == "clip":
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision
    if config.model_type == "clip_vision_model":
        return config
    raise ValueError(f"{model}: config.json has model_type {config.model_type!r}; expected 'clip' (a full "
                     "CLIPModel) or 'clip_vision_model' (CLIPVisionModelWithProjection)")


@functools.cache
def _quiet_vision_tower():
    """CLIPVisionModelWithProjection that expects a full checkpoint's text weights to go unused."""
    from transformers import CLIPVisionModelWithProjection

    class CLIPVisionTower(CLIPVisionModelWithProjection):
        _keys_to_ignore_on_load_unexpected = TEXT_TOWER_KEYS

    return CLIPVisionTower


def load_vision_tower(model: str, local_files_only: bool, dtype: torch.dtype):
    """The vision tower with its projection from a full ``CLIPModel`` folder (or hub id) or a
    ``CLIPVisionModelWithProjection`` one, loaded quietly: the text weights of a full checkpoint are
    expected to go unused, so transformers' load report (30 lines for ViT-L/14) is not printed for
    them. Anything else is still reported, and missing or misshapen vision weights (e.g. a
    ``CLIPVisionModel`` folder, which lacks the projection that makes the pooled vector) are a
    ValueError naming the folder and the weights."""
    config = vision_config(model, local_files_only)
    try:
        tower, info = _quiet_vision_tower().from_pretrained(
            model, config=config, local_files_only=local_files_only, dtype=dtype, output_loading_info=True)
    except OSError as err:  # a config without a weights file
        raise ClipWeightsNotFound(_missing_message(model, err)) from err
    problems = {kind: sorted(map(str, info.get(kind) or ())) for kind in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        found = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(keys[:6])}"
                          + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
                          for kind, keys in problems.items() if keys)
        raise ValueError(f"{model}: the checkpoint does not hold the CLIP vision tower with its projection "
                         f"({found}); expected a full CLIPModel or a CLIPVisionModelWithProjection checkpoint")
    return tower


def weights_fingerprint(model: str) -> str:
    """sha256 over each file of the checkpoint folder (``model``, or its snapshot in the Hugging Face
    cache): its name, size and 16 chunks of 64 KB spread over its content (whole files up to 1 MB).

    Content rather than mtime, so a copied folder keeps its features; sampled, so a 1.7 GB checkpoint
    costs about 1 MB of reading. "" when the checkpoint is not found (loading it then fails anyway).
    """
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a valid repo id
            found = None
        if not isinstance(found, str):
            return ""
        folder = Path(found).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with open(path, "rb") as f:
            if size <= 1 << 20:
                digest.update(f.read())
                continue
            for k in range(16):
                f.seek((size - (1 << 16)) * k // 15)
                digest.update(f.read(1 << 16))
    return digest.hexdigest()[:16]


def offline_help(what: str, model: str, err: Exception, config_key: str, folder_holds: str, fallback: str) -> str:
    """The message for weights not found offline: what is missing and the two ways to provide it."""
    hub_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"{what} {model!r} not found offline ({type(err).__name__}: {err}).\n"
        "Provide it in one of two ways:\n"
        f"  1. on a machine with internet run `huggingface-cli download {model}` (or `hf download {model}`), "
        f"then copy its Hugging Face cache ({hub_home}/hub) to this machine (set HF_HOME if it lives elsewhere);\n"
        f"  2. or point the config at a folder: `{config_key}=/path/to/folder` where the folder holds "
        f"{folder_holds}.\n{fallback}"
    )


def _missing_message(model: str, err: Exception) -> str:
    return offline_help(
        "CLIP checkpoint", model, err, "features.model",
        "CLIPModel.save_pretrained() (or CLIPVisionModelWithProjection.save_pretrained()) and "
        "CLIPImageProcessor.save_pretrained() output",
        "Without CLIP weights, the weight-free default `features=gabor` runs everywhere.",
    )
