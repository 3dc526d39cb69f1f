"""CLIP ViT image features, the paper's conditioning (CLIP ViT-L/14), loaded strictly offline."""
from __future__ import annotations

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


class ClipFeatures:
    """tokens = the vision transformer's last hidden state (n, 1 + n_patches, hidden), i.e.
    (n, 257, 1024) for ViT-L/14; pooled = the projected image embedding (n, projection_dim), i.e.
    (n, 768) for ViT-L/14.

    ``model`` is a Hugging Face model id (looked up in the local cache only) or a folder holding a
    ``save_pretrained()`` CLIP vision model and image processor. The model is loaded on the first
    call, so building configs and pipelines stays cheap.
    """

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

    def _load(self) -> None:
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        try:
            processor = AutoImageProcessor.from_pretrained(self.model, local_files_only=self.local_files_only)
            model = CLIPVisionModelWithProjection.from_pretrained(
                self.model, local_files_only=self.local_files_only, dtype=_DTYPES[self.dtype]
            )
        except (OSError, ValueError) as err:
            raise ClipWeightsNotFound(_missing_message(self.model, err)) from err
        self._processor = processor
        self._model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> Features:
        if self._model is None:
            self._load()
        tokens, pooled = [], []
        for start in range(0, len(images), self.batch_size):
            batch = [np.asarray(img) for img in images[start : start + self.batch_size]]
            pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
            out = self._model(pixel_values=pixels.to(self.device, _DTYPES[self.dtype]))
            tokens.append(out.last_hidden_state.float().cpu().numpy())
            pooled.append(out.image_embeds.float().cpu().numpy())
        if not tokens:  # no images: shapes from the config, without running the model
            cfg = self._model.config
            n_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
            return Features(np.zeros((0, n_tokens, cfg.hidden_size), np.float32),
                            np.zeros((0, cfg.projection_dim), np.float32))
        return Features(np.concatenate(tokens), np.concatenate(pooled))

    def __repr__(self) -> str:
        return f"ClipFeatures({self.cache_id}, device={self.device})"


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
        "CLIPVisionModelWithProjection.save_pretrained() and CLIPImageProcessor.save_pretrained() output",
        "Without CLIP weights, the weight-free default `features=gabor` runs everywhere.",
    )
