"""Brain decoder by retrieval: the decoded embedding picks the nearest gallery images (as NICE and ATM do).

An ``EmbeddingDecoder`` (composition: it does all the training) maps a signal into its image-feature
space; the ``top_k`` gallery images with the highest cosine similarity are blended into one grey
thumbnail. The gallery is the training images by default, or every image found recursively under
``gallery`` (a folder; features cached with ``cached_features`` in the dataset's cache directory).
The gallery's embeddings and thumbnails are saved with the decoder, so a loaded one needs no dataset.

Weighting: ``softmax`` (default) weighs the top-k by softmax(similarity x the embedder's learned inverse
temperature), so a confident match dominates and an ambiguous one blends; ``uniform`` averages them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from prosthesis_sim.decoders.embedding import EmbeddingDecoder
from prosthesis_sim.decoders.ridge_pixels import grey_thumbnail
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.features.cache import cache_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
WEIGHTINGS = ("softmax", "uniform")


def find_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted, hidden folders such as caches skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"decoder.gallery={str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ValueError(f"decoder.gallery={str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class RetrievalDecoder:
    """Signal -> blend of the ``top_k`` gallery thumbnails nearest to its decoded embedding."""

    not_fitted = ("top_k", "weighting", "progress")  # only used at decode time: changing them never refits
    fitted_parts = ("embedding",)  # fit_cached fits (or loads) the embedding decoder through its own cache entry

    @staticmethod
    def fit_inputs(config: dict) -> str:
        """The gallery folder's files (names, sizes, times), so adding or replacing an image refits."""
        gallery = config.get("gallery")
        return "" if gallery is None else cache_key("gallery", find_images(gallery))

    def __init__(self, embedding: EmbeddingDecoder, top_k: int = 5, weighting: str = "softmax",
                 gallery: str | None = None, size: Sequence[int] = (32, 32), progress: bool | None = None):
        if int(top_k) < 1:
            raise ValueError(f"decoder.top_k must be >= 1, got {top_k}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"decoder.weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise ValueError(f"decoder.size must be [height, width] >= 1, got {list(size)}")
        self.embedding, self.top_k, self.weighting = embedding, int(top_k), weighting
        self.gallery = None if gallery is None else str(gallery)
        self.size = (int(size[0]), int(size[1]))
        self.progress = progress
        self.gallery_embeddings: np.ndarray | None = None
        self.gallery_thumbnails: np.ndarray | None = None

    def fit(self, data) -> None:
        paths = list(data.train_images) if self.gallery is None else find_images(self.gallery)
        if self.top_k > len(paths):
            raise ValueError(f"decoder.top_k={self.top_k} exceeds the gallery's {len(paths)} images "
                             f"({self.gallery or 'the training images'})")
        if not self.embedding.is_fitted:
            self.embedding.fit(data)
        self.gallery_embeddings = self.embedding.embed_files(paths, data.cache_dir)
        self.gallery_thumbnails = np.stack([
            grey_thumbnail(load_image(p), self.size)
            for p in tqdm(paths, desc="gallery thumbnails", unit="img", leave=False,
                          disable=None if self.progress is None else not self.progress)])

    def retrieve(self, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices (n, top_k) of the nearest gallery images, best first, and their blend weights (n, top_k)."""
        if self.gallery_embeddings is None:
            raise RuntimeError("RetrievalDecoder used before fit() or load_state(): fit it on a dataset first")
        sim = self.embed(signals) @ self.gallery_embeddings.T
        # stable sort on -sim: ties keep gallery order, so results are deterministic
        idx = np.argsort(-sim, axis=1, kind="stable")[:, : self.top_k]
        top = np.take_along_axis(sim, idx, axis=1)
        if self.weighting == "uniform":
            w = np.full(top.shape, 1.0 / self.top_k)
        else:
            logits = self.embedding.inverse_temperature * (top - top[:, :1])
            w = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return idx, w.astype(np.float32)

    def decode(self, signals: np.ndarray) -> np.ndarray:
        """Signals (n, channels, times) -> blended grey thumbnails (n, h, w) float32 in [0, 1]."""
        idx, w = self.retrieve(signals)
        out = np.einsum("nk,nkhw->nhw", w, self.gallery_thumbnails[idx])
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def embed(self, signals: np.ndarray) -> np.ndarray:
        return self.embedding.embed(signals)

    def embed_images(self, images: Sequence[np.ndarray], paths=None) -> np.ndarray:
        return self.embedding.embed_images(images, paths=paths)

    def state(self):
        if self.gallery_embeddings is None:
            raise RuntimeError("RetrievalDecoder.state called before fit()")
        arrays, meta = self.embedding.state()
        arrays = {f"embedding.{k}": v for k, v in arrays.items()}
        arrays.update({"gallery.embeddings": self.gallery_embeddings, "gallery.thumbnails": self.gallery_thumbnails})
        return arrays, {"embedding": meta, "gallery": self.gallery or "training images",
                        "gallery_size": len(self.gallery_embeddings)}

    def load_state(self, arrays, meta) -> None:
        self.embedding.load_state({k.removeprefix("embedding."): v for k, v in arrays.items()
                                   if k.startswith("embedding.")}, meta["embedding"])
        self.gallery_embeddings = np.asarray(arrays["gallery.embeddings"])
        self.gallery_thumbnails = np.asarray(arrays["gallery.thumbnails"])
        if self.top_k > len(self.gallery_embeddings):
            raise ValueError(f"decoder.top_k={self.top_k} exceeds the saved gallery's {len(self.gallery_embeddings)} images")
        if self.gallery_thumbnails.shape[1:] != self.size:
            raise ValueError(f"decoder.size={list(self.size)} but the saved gallery thumbnails are "
                             f"{list(self.gallery_thumbnails.shape[1:])}")
