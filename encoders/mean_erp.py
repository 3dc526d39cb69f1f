"""The floor: the mean training response, the same for every image.

Any encoder that claims image specificity must beat this on identification (it sits at chance).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class MeanERP:
    image_independent = True  # the same signal for every image: the loop generates it once (protocols.py)

    def __init__(self) -> None:
        self.erp: np.ndarray | None = None

    def fit(self, data) -> None:
        self.erp = data.train.mean(axis=(0, 1)).astype(np.float32)

    def generate(self, images: Sequence[np.ndarray], seed: int | None = None, paths=None,
                 cache_dir=None) -> np.ndarray:  # paths, cache_dir: as other encoders; no features here
        if self.erp is None:
            raise RuntimeError("MeanERP.generate called before fit()")
        return np.repeat(self.erp[None], len(images), axis=0)

    def state(self):
        return {"erp": self.erp}, {}

    def load_state(self, arrays, meta) -> None:
        self.erp = arrays["erp"]
