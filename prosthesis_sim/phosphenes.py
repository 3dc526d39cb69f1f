"""pulse2percept (0.11) adapter: grey image in [0, 1] -> simulated percept in [0, 1].

The image is mapped onto the implant's visual field: the percept grid is set to the field the
electrodes cover (their positions in degrees of visual angle, through the model's own retinotopy,
plus a margin), so percepts come out already cropped, and the image spans exactly that field. Each
electrode is driven by the image area around its place in the field; the percept is scaled by a
constant fixed at build time, so dim images give dim percepts. See docs/phosphenes.md.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from pulse2percept.implants import Implant
from pulse2percept.models import Model, SpatialModel
from pulse2percept.stimuli import ImageStimulus, Stimulus
from pulse2percept.units import uA
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

#: Parameters of pulse2percept's AxonMapSpatial that fix the cached axon geometry. pulse2percept
#: checks only some of them against its pickle (not grid_type, visual_field_map), so the file name
#: carries all of them.
_AXON_GEOMETRY = ("loc_od", "n_axons", "axons_range", "n_ax_segments", "ax_segments_range",
                  "xrange", "yrange", "step", "grid_type", "visual_field_map")


def default_cache_dir() -> Path:
    """Per-user cache for one-off build products (axon maps): $PSIM_CACHE or ~/.cache/prosthesis_sim."""
    return Path(os.environ.get("PSIM_CACHE") or Path.home() / ".cache" / "prosthesis_sim")


class Pulse2PerceptModel:
    """A pulse2percept model and implant as a ``PhospheneModel``.

    model: a pulse2percept model instance (rebound to ``implant``), or a callable ``implant -> model``
        such as a Hydra ``_partial_: true`` node, e.g. ``partial(ScoreboardModel, rho=200, step=0.1)``.
        Its ``xrange``/``yrange`` are overwritten by ``build()``; its ``step`` sets the percept size.
    implant: a pulse2percept ``Implant`` (e.g. ``ArgusII()``).
    amp_max: current (uA) for a white pixel on current-driven implants. Percepts are normalised by
        the all-white percept, so for linear models (scoreboard, axon map) it only sets the units.
    cache_dir: where AxonMapModel keeps its axon pickle; default ``default_cache_dir()``.
    field_margin_deg: margin (dva) added around the electrode positions to form the field. Default
        None = half the median electrode spacing, so the image cells that drive the electrodes tile
        the field exactly (on a regular grid every electrode sits at the centre of its cell).
    """

    def __init__(self, model: Model | SpatialModel | Callable[[Implant], Model], implant: Implant,
                 amp_max: float = 50.0, cache_dir: str | os.PathLike | None = None,
                 field_margin_deg: float | None = None):
        if not isinstance(implant, Implant):
            raise TypeError(f"implant must be a pulse2percept Implant, not {type(implant).__name__}")
        if not isinstance(model, (Model, SpatialModel)):
            model = model(implant)
        model.implant = implant
        self.model = model
        self.implant = implant
        self.amp_max = float(amp_max)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.field_margin_deg = field_margin_deg
        self.electrode_grid: tuple[int, int] = tuple(implant.electrode_array.shape)
        self.field_shape: tuple[int, int] | None = None  # set by build()
        self.field_deg: tuple[float, float, float, float] | None = None  # (x0, x1, y0, y1), dva
        # Current-driven implants get amplitudes in uA; others (PRIMA: irradiance) a dimensionless
        # drive that the implant's own encoder converts (or a scale-free model reads as is).
        self._drives_current = implant.stimulus_unit.dimension == uA.dimension
        self._scale: float | None = None

    def build(self) -> "Pulse2PerceptModel":
        """Fit the grid to the implant's field, build the model once, fix the normalisation."""
        spatial = getattr(self.model, "spatial", self.model)  # Model wraps a SpatialModel
        try:
            # Placed electrode positions in dva through the model's retinotopy: the private helper
            # pulse2percept (pinned to 0.11.0) uses to register a Scene on the electrodes.
            x, y = (np.asarray(v, dtype=np.float64) for v in spatial._scene_sampling_points())
        except NotImplementedError:
            raise NotImplementedError(
                f"{type(spatial).__name__} cannot place its electrodes in the visual field; "
                f"pulse2percept 0.11 does this for retinal models only") from None
        margin = self.field_margin_deg
        if margin is None:
            margin = 0.5 * self._median_spacing(x, y)
        x0, x1, y0, y1 = x.min() - margin, x.max() + margin, y.min() - margin, y.max() + margin
        spatial.set_params(xrange=(x0, x1), yrange=(y0, y1))
        self.field_deg = tuple(float(v) for v in (x0, x1, y0, y1))
        # Each electrode samples the rows x cols image grid at its place in the field; image row 0 is
        # the top of the field (+y), matching pulse2percept's percept rows.
        rows, cols = self.electrode_grid
        self._sample_at = np.stack([(y1 - y) / (y1 - y0) * rows - 0.5,
                                    (x - x0) / (x1 - x0) * cols - 0.5])
        if hasattr(spatial, "axon_pickle"):
            self._build_with_axon_cache(spatial)
        else:
            self.model.build()
        self._scale = 1.0  # unscaled while measuring the all-white percept that fixes the scale
        full = self._percept(np.ones(self.electrode_grid, dtype=np.float32))
        self.field_shape = full.shape
        self._scale = float(full.max())
        if not self._scale > 0:
            raise ValueError("an all-white image gives a blank percept: check the model and implant")
        return self

    @staticmethod
    def _median_spacing(x: np.ndarray, y: np.ndarray) -> float:
        if len(x) < 2:
            raise ValueError("a single-electrode implant needs an explicit field_margin_deg")
        xy = np.column_stack([x, y])
        return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))

    def _build_with_axon_cache(self, spatial) -> None:
        """Build with the axon pickle in cache_dir, named by its geometry, under a file lock.

        The lock stops a second process from reading a half-written pickle (pulse2percept writes it
        in place). pulse2percept leaves the pickle's file handle to the garbage collector; that
        ResourceWarning is silenced here.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        geometry = repr([(k, getattr(spatial, k, None)) for k in _AXON_GEOMETRY] + [spatial.eye])
        key = hashlib.sha1(geometry.encode()).hexdigest()[:16]
        spatial.axon_pickle = str(self.cache_dir / f"axons-{key}.pickle")
        with open(self.cache_dir / f"axons-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                self.model.build()

    def _check_built(self) -> None:
        if self._scale is None:
            raise RuntimeError("call build() before using the phosphene model")

    def stimulus(self, image: np.ndarray) -> Stimulus | np.ndarray:
        """The per-electrode stimulus for a grey image (H, W) in [0, 1]."""
        self._check_built()
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected a grey image (H, W), got shape {image.shape}")
        rows, cols = self.electrode_grid
        cells = cv2.resize(np.clip(image, 0.0, 1.0), (cols, rows), interpolation=cv2.INTER_AREA)
        drive = map_coordinates(cells, self._sample_at, order=1, mode="nearest")
        if self._drives_current:
            return self.amp_max * drive.astype(np.float64)  # bare numbers are uA
        # A Stimulus built from an image inherits its dimensionless unit (pulse2percept has no
        # public constructor argument for it); names put the values on the electrodes in order.
        return Stimulus(ImageStimulus(drive[None, :]), electrodes=self.implant.electrode_names)

    def _percept(self, image: np.ndarray) -> np.ndarray:
        percept = self.model.predict_percept(self.stimulus(image))
        if percept is None:
            return np.zeros(self.field_shape, dtype=np.float32)
        data = np.asarray(percept.data, dtype=np.float32)
        return data.max(axis=-1) / np.float32(self._scale)  # (Y, X, T) -> brightest moment

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Grey image (H, W) in [0, 1] -> percept ``field_shape`` float32 in [0, 1]."""
        self._check_built()
        return np.clip(self._percept(image), 0.0, 1.0)
