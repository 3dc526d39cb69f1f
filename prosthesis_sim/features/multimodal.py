"""CLIP image + caption text tokens in one sequence: the paper's v2/v4 "unified" conditioning.

The DiT cross-attends to CLIP image tokens concatenated (token axis) with the CLIP text tokens of a
caption of the image. Both parts are mapped into CLIP's joint image-text space so that they share
one dimension (projection_dim, 768 for ViT-L/14) and are comparable to each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from prosthesis_sim.features.captions import ConceptCaptions
from prosthesis_sim.features.clip import _DTYPES, ClipFeatures, ClipWeightsNotFound, _missing_message
from prosthesis_sim.protocols import Features


class ClipImageTextFeatures(ClipFeatures):
    """tokens = [image tokens ; text tokens], (n, 1 + n_patches + max_text_tokens, projection_dim):
    (n, 257 + 77, 768) for ViT-L/14.

    - image tokens: vision last_hidden_state -> post_layernorm -> visual_projection, i.e. every patch
      token mapped the way CLIP maps its CLS token to the image embedding (token 0 is image_embeds);
    - text tokens: the caption's text last_hidden_state -> text_projection, padded or truncated to
      ``max_text_tokens``; padding positions are zero (the same for every image, since the encoder's
      cross-attention has no key mask);
    - pooled = image_embeds (n, projection_dim), unnormalised, the same as ``ClipFeatures.pooled``,
      so pooled-input ablations are unchanged by captions.

    ``captions`` is a caption source from ``captions.py`` (default: THINGS concept names). It gets the
    batch's image paths through ``cached_features`` (``uses_paths``), and None for in-memory images.
    ``model`` must hold a full ``CLIPModel`` (vision + text) and its image processor and tokenizer.
    Device, dtype and lazy loading work as in ``ClipFeatures``. ``tokens=False`` computes the pooled
    vector only: no captions, no text tower, no projection of the patch tokens.
    """

    uses_paths = True

    def __init__(
        self,
        model: str = "openai/clip-vit-large-patch14",
        captions=None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 16,
        local_files_only: bool = True,
        max_text_tokens: int = 77,
    ):
        super().__init__(model, device, dtype, batch_size, local_files_only)
        self.captions = ConceptCaptions() if captions is None else captions
        self.max_text_tokens = int(max_text_tokens)
        source = str(Path(self.model).resolve()) if Path(self.model).is_dir() else self.model
        caption_id = getattr(self.captions, "cache_id", None) or repr(self.captions)
        self.cache_id = (f"clip_text-{source}-{type(self.captions).__name__}:{caption_id}"
                         f"-t{self.max_text_tokens}-{dtype}")
        self._tokenizer = None

    def _load(self) -> None:
        self._model, self._processor, self._tokenizer = load_clip(
            self.model, self.local_files_only, self.dtype, self.device)
        limit = self._model.config.text_config.max_position_embeddings
        if self.max_text_tokens > limit:
            raise ValueError(f"max_text_tokens={self.max_text_tokens} exceeds the CLIP text model's {limit} positions")

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None,
                 tokens: bool = True) -> Features:
        if self._model is None:
            self._load()
        if not len(images):  # shapes from the config, without running the model
            empty = self.empty()
            return empty if tokens else Features(np.zeros((0, 0, 0), np.float32), empty.pooled)
        if not tokens:
            pooled = [self._image_tokens([np.asarray(img) for img in images[start : start + self.batch_size]],
                                         cls_only=True)[:, 0].float().cpu().numpy()
                      for start in range(0, len(images), self.batch_size)]
            return Features(np.zeros((len(images), 0, 0), np.float32), np.concatenate(pooled))
        captions = self.captions(None if paths is None else [Path(p) for p in paths], images)
        if len(captions) != len(images):
            raise ValueError(f"caption source returned {len(captions)} captions for {len(images)} images")
        sequences, pooled = [], []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            image = self._image_tokens([np.asarray(img) for img in images[start:stop]])
            text = self._text_tokens(list(captions[start:stop]))
            sequences.append(torch.cat([image, text], dim=1).float().cpu().numpy())
            pooled.append(image[:, 0].float().cpu().numpy())
        return Features(np.concatenate(sequences), np.concatenate(pooled))

    def empty(self) -> Features:
        """Features of no images, i.e. the shapes, from the config alone (no weights loaded)."""
        if self._model is not None:
            cfg = self._model.config
        else:
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(self.model, local_files_only=self.local_files_only)
            except (OSError, ValueError) as err:
                raise ClipWeightsNotFound(_missing_message(self.model, err)) from err
            if cfg.model_type != "clip":
                raise ValueError(f"{self.model}: config.json has model_type {cfg.model_type!r}; image + text "
                                 "features need a full CLIPModel (model_type 'clip', vision and text towers)")
        n_image = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 + 1
        return Features(np.zeros((0, n_image + self.max_text_tokens, cfg.projection_dim), np.float32),
                        np.zeros((0, cfg.projection_dim), np.float32))

    def _image_tokens(self, images: list[np.ndarray], cls_only: bool = False) -> torch.Tensor:
        """Projected image tokens; ``cls_only``: token 0 only (the pooled image embedding)."""
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"]
        vision = self._model.vision_model(pixel_values=pixels.to(self.device, _DTYPES[self.dtype]))
        hidden = vision.last_hidden_state[:, :1] if cls_only else vision.last_hidden_state
        return self._model.visual_projection(self._model.vision_model.post_layernorm(hidden))

    def _text_tokens(self, captions: list[str]) -> torch.Tensor:
        text = self._tokenizer(captions, padding="max_length", max_length=self.max_text_tokens,
                               truncation=True, return_tensors="pt").to(self.device)
        hidden = self._model.text_model(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
        mask = text["attention_mask"][..., None].to(hidden.last_hidden_state.dtype)
        return self._model.text_projection(hidden.last_hidden_state) * mask

    def __repr__(self) -> str:
        return f"ClipImageTextFeatures({self.cache_id}, device={self.device})"


def load_clip(model: str, local_files_only: bool, dtype: str, device: str):
    """(CLIPModel, image processor, tokenizer) from a local folder or the HF cache, else a clear error."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    try:
        processor = AutoImageProcessor.from_pretrained(model, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
        clip = CLIPModel.from_pretrained(model, local_files_only=local_files_only, dtype=_DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise ClipWeightsNotFound(
            _missing_message(model, err)
            + "\nImage + text features need the full CLIPModel (vision and text towers) with its image "
            "processor and tokenizer: CLIPModel/CLIPProcessor.save_pretrained() output."
        ) from err
    return clip.to(device).eval(), processor, tokenizer


@torch.inference_mode()
def clip_score(model, processor, tokenizer, images, captions: list[str], device: str = "cpu") -> np.ndarray:
    """100 x cosine(image embedding, caption embedding) per (image, caption) pair."""
    pixels = processor(images=[np.asarray(i) for i in images], return_tensors="pt")["pixel_values"]
    limit = model.config.text_config.max_position_embeddings
    text = tokenizer(captions, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(device)
    out = model(pixel_values=pixels.to(device, model.dtype), **text)
    image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    words = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    return (100 * (image * words).sum(-1)).cpu().numpy()
