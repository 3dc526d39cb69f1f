"""Our own phosphene renderer in torch: a percept is one matrix product.

For any pulse2percept implant and scoreboard model (retinal or cortical), ``build()`` lets
pulse2percept place the electrodes and lay out the percept grid (through the adapter, so the field,
prefilter and grid are the same), takes every grid pixel's tissue position from pulse2percept's own
map (Watson 2014 on the retina, Polimeni 2006 on cortex), and precomputes the electrode -> pixel
kernel ``K[p, e] = exp(-|tissue(p) - electrode(e)|^2 / (2 rho^2)``: Gaussian phosphenes of width
rho on the tissue, so their size in the visual field follows the map's magnification. A percept is
then ``K @ drive``: batched over frames, on CPU or CUDA, fp16-capable and differentiable with
respect to the drive (and, through the prefilter, the image). The cortical scoreboard's hemisphere
split (no spread across the midline) and its blur across the vertical meridian are linear in the
percept, so they are applied to the kernel once, at build time.
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from pulse2percept.implants import Implant

from prosthesis_sim.phosphenes.field import region_names, spatial_of, tissue_xy
from prosthesis_sim.phosphenes.p2p import Pulse2PerceptModel
from prosthesis_sim.phosphenes.temporal import LeakyIntegrator

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def gaussian_kernel(pixels: list[np.ndarray], electrodes: np.ndarray, rho: float,
                    split_at: float | None = None,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Sum over map regions of exp(-d^2 / (2 rho^2)): (n_pixels, n_electrodes).

    pixels: per region, (n_pixels, 2) tissue positions (um; NaN where the map has no tissue).
    electrodes: (n_electrodes, 2) tissue positions (um). split_at: on a split map, the tissue x
    that separates the hemispheres; current does not spread across it.
    Built on ``device`` in float32, so a large kernel never exists in float64 on the host.
    """
    el = torch.as_tensor(electrodes, dtype=torch.float32, device=device)
    kernel = None
    for region in pixels:
        px = torch.as_tensor(region, dtype=torch.float32, device=device)
        valid = torch.isfinite(px).all(dim=1, keepdim=True)
        px = torch.nan_to_num(px)
        k = torch.exp(-torch.cdist(px, el).square() / (2.0 * rho ** 2)) * valid
        if split_at is not None:
            k = k * ((px[:, :1] >= split_at) == (el[:, 0] >= split_at)[None, :])
        kernel = k if kernel is None else kernel + k
    return kernel


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of an area average: out cell j averages input [j, j + 1) * n_in / n_out."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    return torch.as_tensor(overlap / overlap.sum(axis=1, keepdims=True), dtype=torch.float32)


def blend_meridian(kernel: torch.Tensor, x_dva: np.ndarray, width: float) -> torch.Tensor:
    """pulse2percept's vertical-meridian blend applied to every kernel column.

    A 1-D Gaussian blur along x (sigma ``width`` dva, scipy's 4-sigma taps, edges repeated) mixed in
    with weight exp(-x^2 / (2 width^2)): a no-op unless the grid straddles x = 0.
    x_dva: (rows, cols) pixel x of the grid; kernel: (rows * cols, n).
    """
    along = x_dva[0]
    if not width or along.size < 2 or not (np.any(along < 0) and np.any(along > 0)):
        return kernel
    sigma = width / float(np.abs(np.diff(along)).mean())
    radius = int(4.0 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).to(kernel.device, kernel.dtype)
    rows, cols = x_dva.shape
    k = kernel.reshape(rows, cols, -1).permute(0, 2, 1).reshape(-1, 1, cols)  # (rows * n, 1, cols)
    blurred = F.conv1d(F.pad(k, (radius, radius), mode="replicate"), taps[None, None])
    weight = torch.as_tensor(np.exp(-x_dva ** 2 / (2.0 * width ** 2)), dtype=kernel.dtype,
                             device=kernel.device)
    blurred = blurred.reshape(rows, -1, cols).permute(0, 2, 1).reshape(rows * cols, -1)
    return kernel + weight.reshape(-1, 1) * (blurred - kernel)


class TorchPhospheneModel:
    """Scoreboard phosphenes as one (n_pixels x n_electrodes) matrix on CPU or CUDA.

    Parameters
    ----------
    model, implant, amp_max, field_margin_deg, exclude_electrodes
        As for ``Pulse2PerceptModel``;
        the model must be a pulse2percept scoreboard (retinal or cortical: it supplies rho, the
        map, the placement and the percept grid). ``amp_max`` only sets units: percepts are normalised by the all-white one.
    device
        'cpu', 'cuda', 'cuda:1' ...
    dtype
        float32, float16 or bfloat16 (kernel and percepts).
    layout
        'auto' (default), 'dense' or 'sparse'. Kernel entries below the model's
        ``min_current_spread`` (1e-8: pulse2percept skips them too) are zero; 'auto' keeps the
        kernel as a sparse CSR matrix on the CPU in float32 when at most half of it is non-zero
        (a phosphene covers a small part of the field: 2-20 % here), else dense (GPUs, fp16).
    temporal
        None (default: every call independent), or ``{tau_ms, fps}`` for a dynaphos-style
        leaky integrator per electrode (``reset()`` between videos; see temporal.py).
    """

    def __init__(self, model: Callable[[Implant], object] | object, implant: Implant,
                 amp_max: float = 50.0, cache_dir: str | os.PathLike | None = None,
                 field_margin_deg: float | None = None, device: str = "cpu", dtype: str = "float32",
                 layout: str = "auto", temporal: dict | None = None,
                 exclude_electrodes: list | tuple = ()):
        if layout not in ("auto", "dense", "sparse"):
            raise ValueError(f"layout must be auto, dense or sparse, not {layout!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
        self.reference = Pulse2PerceptModel(model, implant, amp_max=amp_max, cache_dir=cache_dir,
                                            field_margin_deg=field_margin_deg,
                                            exclude_electrodes=exclude_electrodes)
        spatial = spatial_of(self.reference.model)
        if not hasattr(spatial, "rho") or hasattr(spatial, "axon_pickle"):
            raise TypeError(f"the torch renderer draws scoreboard phosphenes: give a pulse2percept "
                            f"ScoreboardModel (retina or cortex), not {type(spatial).__name__}")
        self.implant = implant
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"phosphene.device={device!r}, but CUDA is not available on this "
                               "machine (torch.cuda.is_available() is False): use device=cpu")
        self.dtype = _DTYPES[dtype]
        self.layout = layout
        self.temporal = LeakyIntegrator(**temporal) if temporal else None
        self.kernel: torch.Tensor | None = None

    # Geometry, as the adapter has it.
    @property
    def field_shape(self):
        return self.reference.field_shape

    @property
    def field_deg(self):
        return self.reference.field_deg

    @property
    def electrode_grid(self):
        return self.reference.electrode_grid

    def build(self) -> "TorchPhospheneModel":
        """Place electrodes and grid through pulse2percept, then precompute the kernel on device."""
        ref = self.reference.build()
        spatial = spatial_of(ref.model)
        grid = spatial.grid
        pixels = [np.column_stack([np.ravel(getattr(grid, r).x), np.ravel(getattr(grid, r).y)])
                  for r in region_names(spatial)]
        vfmap = spatial.visual_field_map
        split_at = vfmap.left_offset / 2 if getattr(vfmap, "split_map", False) else None
        kernel = gaussian_kernel(pixels, tissue_xy(spatial), float(spatial.rho), split_at,
                                 self.device)
        kernel = blend_meridian(kernel, np.asarray(grid.x), getattr(spatial, "meridian_blend", 0))
        kernel = kernel * (kernel >= getattr(spatial, "min_current_spread", 0.0))
        self.kernel = self._laid_out(kernel.to(self.dtype))
        self._shape = tuple(np.shape(grid.x))
        white = kernel.sum(dim=1).max()
        if not white > 0:
            raise ValueError("an all-white image gives a blank percept: check the model and implant")
        self.scale = float(white)
        # Bilinear taps of every electrode in the prefilter cells (edges repeated, as the adapter).
        rows, cols = ref.field.cells
        r, c = (np.clip(v, 0, n - 1) for v, n in zip(ref.field.sample_at, (rows, cols)))
        r0, c0 = np.minimum(np.floor(r), rows - 2).clip(0), np.minimum(np.floor(c), cols - 2).clip(0)
        fr, fc = r - r0, c - c0
        r1, c1 = np.minimum(r0 + 1, rows - 1), np.minimum(c0 + 1, cols - 1)
        index = np.stack([r0 * cols + c0, r0 * cols + c1, r1 * cols + c0, r1 * cols + c1], axis=-1)
        weight = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], axis=-1)
        self._tap_index = torch.as_tensor(index.astype(np.int64), device=self.device)
        self._tap_weight = torch.as_tensor(weight, dtype=torch.float32, device=self.device)
        self._area_cache: dict = {}
        self.reset()
        return self

    def _laid_out(self, kernel: torch.Tensor) -> torch.Tensor:
        """The kernel as the layout asks: sparse CSR (CPU float32, when sparse enough) or dense."""
        if kernel.layout == torch.sparse_csr:
            kernel = kernel.to_dense()
        sparse = self.layout == "sparse" or (
            self.layout == "auto" and kernel.device.type == "cpu" and kernel.dtype == torch.float32
            and float((kernel != 0).float().mean()) <= 0.5)
        if not sparse:
            return kernel
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta": matmul is all we use
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return kernel.to_sparse_csr()

    def dense_kernel(self) -> torch.Tensor:
        """The (n_pixels, n_electrodes) kernel as a dense tensor, whatever the layout."""
        self._check_built()
        return self.kernel.to_dense() if self.kernel.layout == torch.sparse_csr else self.kernel

    def reset(self) -> None:
        """Forget the temporal state (no-op without temporal dynamics)."""
        if self.temporal is not None:
            self.temporal.reset()

    def to(self, device: str | torch.device | None = None,
           dtype: str | None = None) -> "TorchPhospheneModel":
        """A copy of the built model on another device and/or dtype (the original is unchanged)."""
        self._check_built()
        twin = self.fork()
        twin.device = torch.device(device) if device is not None else self.device
        twin.dtype = _DTYPES[dtype] if dtype is not None else self.dtype
        twin.kernel = twin._laid_out(self.dense_kernel().to(twin.device, twin.dtype))
        twin._tap_index = self._tap_index.to(twin.device)
        twin._tap_weight = self._tap_weight.to(twin.device)
        twin._area_cache = {}
        return twin

    def fork(self) -> "TorchPhospheneModel":
        """The same built model with its own temporal state (kernel shared): one per stream."""
        twin = copy.copy(self)
        if self.temporal is not None:
            twin.temporal = LeakyIntegrator(self.temporal.tau_ms, self.temporal.fps)
        return twin

    def _check_built(self) -> None:
        if self.kernel is None:
            raise RuntimeError("call build() before using the phosphene model")

    def drive(self, images: torch.Tensor) -> torch.Tensor:
        """Grey images (B, H, W) in [0, 1] -> per-electrode drive (B, n) in [0, 1], differentiably.

        Area-average onto the prefilter cells (exact overlap weights, as cv2.INTER_AREA when
        shrinking; two small matrix products), then bilinear at each electrode (as the adapter).
        """
        self._check_built()
        if images.ndim != 3:
            raise ValueError(f"expected grey images (B, H, W), got shape {tuple(images.shape)}")
        rows_w, cols_w = self._area_weights(*images.shape[1:])
        images = images.to(self.device, torch.float32)
        # Columns first: one (B*H x W) @ (W x cols) product, then the short row reduction. The cell
        # averages are clipped to [0, 1] (the same as clipping pixels for images in range, at a
        # fraction of the memory traffic of clipping a full-size frame).
        cells = (rows_w @ (images.reshape(-1, images.shape[-1]) @ cols_w.T).reshape(
            len(images), images.shape[1], -1)).clamp(0, 1)
        taps = cells.reshape(len(images), -1)[:, self._tap_index]  # (B, n, 4)
        return (taps * self._tap_weight).sum(dim=-1)

    def _area_weights(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows x H) and (cols x W) area-overlap matrices for an image size, cached per size."""
        key = (height, width)
        if key not in self._area_cache:
            rows, cols = self.reference.field.cells
            self._area_cache[key] = (area_matrix(height, rows).to(self.device),
                                     area_matrix(width, cols).to(self.device))
        return self._area_cache[key]

    def render_stimulus(self, amplitudes: torch.Tensor) -> torch.Tensor:
        """Per-electrode amplitudes (B, n), implant order -> unnormalised brightness (B, h, w).

        Same units as pulse2percept's ScoreboardModel for the same amplitudes (the agreement test).
        """
        self._check_built()
        amplitudes = amplitudes.to(self.device, self.kernel.dtype)
        if self.kernel.layout == torch.sparse_csr:
            out = (self.kernel @ amplitudes.T).T
        else:
            out = amplitudes @ self.kernel.T
        return out.reshape(len(amplitudes), *self._shape)

    def render(self, images: torch.Tensor) -> torch.Tensor:
        """Grey images (B, H, W) -> percepts (B, h, w) in [0, 1] (in ``dtype``; not clipped, so
        gradients flow; linear in the image, white -> peak 1). With temporal dynamics, the batch
        is a sequence of consecutive frames."""
        drive = self.drive(images.to(self.device))
        if self.temporal is not None:
            drive = self.temporal(drive)
        return self.render_stimulus(drive) / self.scale

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Grey image (H, W) in [0, 1] -> percept ``field_shape`` float32 in [0, 1]."""
        self._check_built()
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected a grey image (H, W), got shape {image.shape}")
        with torch.no_grad():
            percept = self.render(torch.from_numpy(image)[None])[0]
        return percept.float().clamp(0, 1).cpu().numpy()
