"""pulse2percept (0.11) adapter: grey image in [0, 1] -> simulated percept in [0, 1].

Retinal and cortical implants alike. The image is mapped onto the implant's visual field: the
percept grid is set to the field the electrodes cover (their positions in degrees of visual angle,
through the model's own retinotopy and implant placement, plus a margin), so percepts come out
already cropped, and the image spans exactly that field. Each electrode is driven by the image area
around its place in the field; the percept is scaled by a constant fixed at build time, so dim
images give dim percepts. See docs/phosphenes.md.
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
from pulse2percept.models.cortex import DynaphosModel
from pulse2percept.stimuli import BiphasicPulseTrain, ImageStimulus, Stimulus
from pulse2percept.units import uA
from scipy.ndimage import map_coordinates

from prosthesis_sim.phosphenes.field import Field, drop_unusable, electrode_dva, spatial_of

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

    Parameters
    ----------
    model
        A pulse2percept model instance (rebound to ``implant``), or a callable ``implant -> model``
        such as a Hydra ``_partial_: true`` node, e.g. ``partial(ScoreboardModel, rho=200, step=0.1)``.
        Its ``xrange``/``yrange`` are overwritten by ``build()``; its ``step`` sets the percept size.
        Cortical models take the implant's place on cortex as ``implant_position`` (um).
    implant
        A pulse2percept ``Implant`` (e.g. ``ArgusII()``, ``Orion()``). Electrodes that the
        model's map cannot place (off the modelled cortex) and inactive ones (reference, counter) are
        removed from it by ``build()``.
    amp_max
        Current (uA) for a white pixel on current-driven implants. For linear models
        (scoreboard, axon map) it only sets the units, as percepts are normalised by the all-white one.
    pulse_train
        For models with a time axis (DynaphosModel): ``{freq: Hz, phase_dur: ms,
        duration: ms}`` of the biphasic train each electrode gets at amplitude ``grey * amp_max``.
        Required for DynaphosModel, unused otherwise.
    cache_dir
        Where AxonMapModel keeps its axon pickle; default ``default_cache_dir()``.
    field_margin_deg
        Margin (dva) added around the electrode positions to form the field. Default
        None = half the median electrode spacing, so the image cells that drive the electrodes tile
        the field exactly (on a regular grid every electrode sits at the centre of its cell).
    exclude_electrodes
        Names never driven by the image (e.g. return electrodes that pulse2percept
        keeps active); removed from the implant by ``build()``, with a log line.
    """

    def __init__(self, model: Model | SpatialModel | Callable[[Implant], Model], implant: Implant,
                 amp_max: float = 50.0, pulse_train: dict | None = None,
                 cache_dir: str | os.PathLike | None = None, field_margin_deg: float | None = None,
                 exclude_electrodes: list | tuple = ()):
        if not isinstance(implant, Implant):
            raise TypeError(f"implant must be a pulse2percept Implant, not {type(implant).__name__}")
        if not isinstance(model, (Model, SpatialModel, DynaphosModel)):
            model = model(implant)
        model.implant = implant
        if isinstance(model, DynaphosModel) and not pulse_train:
            raise ValueError("DynaphosModel needs a stimulus with a time axis: set pulse_train "
                             "(e.g. {freq: 300, phase_dur: 0.17, duration: 200})")
        self.model = model
        self.implant = implant
        self.amp_max = float(amp_max)
        self.pulse_train = dict(pulse_train) if pulse_train else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.field_margin_deg = field_margin_deg
        self.exclude_electrodes = list(exclude_electrodes or ())
        self.field: Field | None = None  # set by build()
        self.field_shape: tuple[int, int] | None = None  # percept (h, w), set by build()
        self.field_deg: tuple[float, float, float, float] | None = None  # (x0, x1, y0, y1), dva
        self.dropped: list = []  # inactive electrodes and those off the modelled map, removed by build()
        # Current-driven implants get amplitudes in uA; others (PRIMA: irradiance) a dimensionless
        # image stimulus that the implant's own encoder converts (PRIMAEncoder's photovoltaic path).
        self._drives_current = implant.stimulus_unit.dimension == uA.dimension
        self._scale: float | None = None

    @property
    def electrode_grid(self) -> tuple[int, int]:
        """(rows, cols) of the area-average prefilter (after build)."""
        self._check_built()
        return self.field.cells

    def build(self) -> "Pulse2PerceptModel":
        """Place the electrodes, fit the grid to their field, build the model once, fix the scale."""
        spatial = spatial_of(self.model)
        self.dropped = drop_unusable(spatial, self.exclude_electrodes)
        self.electrode_names = list(self.implant.electrode_names)
        _, xy = electrode_dva(spatial)
        self.field = Field.around(xy, self.field_margin_deg)
        x0, x1, y0, y1 = self.field.box
        spatial.set_params(xrange=(x0, x1), yrange=(y0, y1))
        self.field_deg = self.field.box
        if hasattr(spatial, "axon_pickle"):
            self._build_with_axon_cache(spatial)
        else:
            with warnings.catch_warnings():  # rho-vs-pitch advice, repeated on every build
                warnings.filterwarnings("ignore", message=".*rho.*")
                self.model.build()
        self._scale = 1.0  # unscaled while measuring the all-white percept that fixes the scale
        full = self._percept(np.ones(self.field.cells, dtype=np.float32))
        self.field_shape = full.shape
        self._scale = float(full.max())
        if not self._scale > 0:
            raise ValueError("an all-white image gives a blank percept: check the model and implant")
        return self

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

    def drive(self, image: np.ndarray) -> np.ndarray:
        """Per-electrode drive in [0, 1] (implant order): the image area-averaged, sampled per electrode."""
        self._check_built()
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected a grey image (H, W), got shape {image.shape}")
        rows, cols = self.field.cells
        cells = cv2.resize(np.clip(image, 0.0, 1.0), (cols, rows), interpolation=cv2.INTER_AREA)
        return map_coordinates(cells, self.field.sample_at, order=1, mode="nearest").astype(np.float64)

    def stimulus(self, image: np.ndarray) -> Stimulus | np.ndarray | None:
        """What the model is given for a grey image (H, W) in [0, 1]; None for a blank train."""
        drive = self.drive(image)
        if self.pulse_train:
            train = self.pulse_train
            pulses = {name: BiphasicPulseTrain(train["freq"], self.amp_max * d, train["phase_dur"],
                                               stim_dur=train["duration"])
                      for name, d in zip(self.electrode_names, drive) if d > 0}
            return Stimulus(pulses) if pulses else None
        if self._drives_current:
            return self.amp_max * drive  # bare numbers are uA
        # A Stimulus built from an image inherits its dimensionless unit (pulse2percept has no
        # public constructor argument for it); names put the values on the electrodes in order.
        return Stimulus(ImageStimulus(drive[None, :]), electrodes=self.electrode_names)

    def _percept(self, image: np.ndarray) -> np.ndarray:
        stim = self.stimulus(image)
        percept = None if stim is None else self.model.predict_percept(stim)
        if percept is None:
            return np.zeros(self.field_shape, dtype=np.float32)
        data = np.asarray(percept.data, dtype=np.float32)
        return data.max(axis=-1) / np.float32(self._scale)  # (Y, X, T) -> brightest moment

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Grey image (H, W) in [0, 1] -> percept ``field_shape`` float32 in [0, 1]."""
        self._check_built()
        return np.clip(self._percept(image), 0.0, 1.0)
