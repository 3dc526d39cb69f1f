"""Where an implant's electrodes sit in the visual field, and the field box a percept covers.

Built from pulse2percept's public API only: the electrode array's ``coordinates()``, the model's
placement parameters (``implant_position``, ``implant_rotation``) and its visual field map's
``from_dva()`` / ``to_dva()`` (Watson 2014 for the retina, Polimeni 2006 for V1). The same
geometry serves the pulse2percept adapter and the torch renderer, so both map an image onto the
field the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pulse2percept.units import Quantity, deg, dva, um
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)


def spatial_of(model):
    """The spatial part of a pulse2percept model (``Model`` wraps one; others are their own)."""
    return getattr(model, "spatial", None) or model


def _as_um(value) -> np.ndarray:
    """A placement given as plain numbers (um) or a pulse2percept length Quantity -> um."""
    if isinstance(value, Quantity):
        return np.asarray(value.to_value(um), dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def placement_um(spatial) -> tuple[np.ndarray, float]:
    """The model-side implant shift (x, y) in um and rotation in radians.

    ``implant_position`` may be plain numbers (um), a length Quantity, or a Quantity in dva, which
    is placed through the map's ``from_dva()`` as pulse2percept does (one-region maps only).
    """
    pos = getattr(spatial, "implant_position", (0, 0))
    if isinstance(pos, Quantity) and pos.unit.dimension == dva.dimension:
        regions = list(spatial.visual_field_map.from_dva())
        if len(regions) != 1:
            raise ValueError(f"implant_position {pos} is in dva, but the map has regions {regions}: "
                             "give the position in um of cortex instead")
        xy = np.asarray(pos.to_value(dva), dtype=np.float64).ravel()
        tx, ty = spatial.visual_field_map.from_dva()[regions[0]](xy[:1], xy[1:2])
        shift = np.array([float(np.ravel(tx)[0]), float(np.ravel(ty)[0])])
    else:
        shift = _as_um(pos).ravel()[:2]
    if shift.size != 2 or not np.all(np.isfinite(shift)):
        raise ValueError(f"implant_position must be a finite (x, y) pair in um, not {pos!r}")
    rotation = getattr(spatial, "implant_rotation", 0)
    rotation = float(rotation.to_value(deg) if isinstance(rotation, Quantity) else rotation)
    return shift, np.deg2rad(rotation)


def tissue_xy(spatial) -> np.ndarray:
    """Placed electrode positions (n, 2) in the map's tissue coordinates (um), array order."""
    xyz = spatial.implant.electrode_array.coordinates(um)
    shift, theta = placement_um(spatial)
    c, s = np.cos(theta), np.sin(theta)
    x, y = xyz[:, 0], xyz[:, 1]
    return np.column_stack([c * x - s * y + shift[0], s * x + c * y + shift[1]])


def region_names(spatial) -> list[str]:
    """The map's regions ('ret' for the retina; 'v1', 'v2', ... for cortex) in the model's order."""
    regions = getattr(spatial, "regions", None)
    return list(regions) if regions else list(spatial.visual_field_map.to_dva())


def electrode_dva(spatial) -> tuple[list, np.ndarray]:
    """(names, (n, 2) dva) of every electrode, through the first region of the model's map.

    Electrodes the map does not place (off the modelled cortex) come back as NaN.
    """
    names = list(spatial.implant.electrode_names)
    xy = tissue_xy(spatial)
    to_dva = spatial.visual_field_map.to_dva()[region_names(spatial)[0]]
    x, y = to_dva(xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64))
    return names, np.column_stack([np.asarray(x, np.float64), np.asarray(y, np.float64)])


def drop_unusable(spatial, exclude: list | tuple = ()) -> list:
    """Remove electrodes that cannot make a phosphene from the implant; return their names.

    Two kinds: inactive ones (ICVP's reference and counter electrodes, any ``deactivate()``d one),
    which pulse2percept never drives, and those the model's map does not place (off the modelled
    cortex), which DynaphosModel refuses to drive and which give no phosphene in the scoreboard.
    ``exclude`` names more (e.g. the return electrodes of a suprachoroidal array, which
    pulse2percept leaves active). Removing them keeps the stimulus, the field and the kernel over
    the same electrodes.
    """
    array = spatial.implant.electrode_array
    unknown = [n for n in exclude if n not in array.electrodes]
    if unknown:
        raise ValueError(f"exclude_electrodes: {unknown} are not electrodes of "
                         f"{type(spatial.implant).__name__} (it has {list(array.electrodes)[:8]} ...)")
    inactive = [n for n, e in array.electrodes.items()
                if not getattr(e, "activated", True) or n in exclude]
    for name in inactive:
        array.remove_electrode(name)
    if inactive:
        log.info("%s: %d inactive or excluded electrodes (never driven) left out: %s",
                 type(spatial.implant).__name__, len(inactive), ", ".join(map(str, inactive)))
    names, xy = electrode_dva(spatial)
    lost = [n for n, ok in zip(names, np.all(np.isfinite(xy), axis=1)) if not ok]
    if len(lost) == len(names):
        raise ValueError(
            f"none of the {len(names)} electrodes of {type(spatial.implant).__name__} lies on "
            f"{type(spatial.visual_field_map).__name__} at implant_position "
            f"{getattr(spatial, 'implant_position', None)}: move the implant onto the map")
    for name in lost:
        array.remove_electrode(name)
    if lost:
        log.info("%s: %d of %d electrodes lie outside %s region %r at implant_position %s and "
                 "were dropped: %s", type(spatial.implant).__name__, len(lost), len(names),
                 type(spatial.visual_field_map).__name__, region_names(spatial)[0],
                 getattr(spatial, "implant_position", None), ", ".join(map(str, lost)))
    return inactive + lost


@dataclass(frozen=True)
class Field:
    """The box of visual field a percept covers, and how an image is laid onto it.

    box: (x0, x1, y0, y1) in dva; the whole image spans it, top row = top of the field (+y).
    cells: (rows, cols) of the area-average prefilter: one cell per electrode spacing, so on a
        regular array every electrode samples exactly its own cell.
    sample_at: (2, n) fractional (row, col) of every electrode in the cell grid (bilinear).
    """
    box: tuple[float, float, float, float]
    cells: tuple[int, int]
    sample_at: np.ndarray

    @classmethod
    def around(cls, xy: np.ndarray, margin: float | None = None) -> "Field":
        """The field around electrodes at ``xy`` (n, 2) dva, plus ``margin`` (default: half spacing)."""
        spacing = median_spacing(xy)
        margin = 0.5 * spacing if margin is None else float(margin)
        x, y = xy[:, 0], xy[:, 1]
        x0, x1, y0, y1 = x.min() - margin, x.max() + margin, y.min() - margin, y.max() + margin
        cells = (max(1, int(round((y1 - y0) / spacing))), max(1, int(round((x1 - x0) / spacing))))
        rows, cols = cells
        sample_at = np.stack([(y1 - y) / (y1 - y0) * rows - 0.5, (x - x0) / (x1 - x0) * cols - 0.5])
        return cls((float(x0), float(x1), float(y0), float(y1)), cells, sample_at)


def median_spacing(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance between distinct electrode positions (dva)."""
    unique = np.unique(np.round(xy, 9), axis=0)
    if len(unique) < 2:
        raise ValueError("an implant with a single electrode position needs an explicit "
                         "field_margin_deg")
    return float(np.median(cKDTree(unique).query(unique, k=2)[0][:, 1]))
