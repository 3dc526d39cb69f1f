"""Retinotopic early visual sources: where in the visual field an image has its contrast and luminance
decides which patch of V1/V2 responds, and so the scalp pattern of C1, P1 and N1.

What real early visual M/EEG carries about *where* (references in docs/synthetic-data.md):
- the visual field is tiled by cells (eccentricity rings x polar-angle wedges, finer near the fovea);
  each drives a patch of V1 placed by the complex-log map z = k log(1 + w / a), with Horton & Hoyt's
  magnification k / (E + a), k = 17.3 mm, a = 0.75 deg, and a mirror patch of V2 next to it;
- left field -> right hemisphere; upper field -> lower bank of the calcarine sulcus, lower field -> upper
  bank, so the dipoles point the other way and C1 (60-90 ms) flips polarity (Jeffreys & Axford 1972);
- dipole moments grow with the cortical area a cell covers (cortical magnification favours the fovea);
- P1 (100-130 ms, one source per quadrant in lateral extrastriate cortex) and an N1 (150-200 ms, one per
  hemifield) are driven by the contralateral field, so they are larger over the contralateral hemisphere.
Sources are projected to the sensors with MNE's forward model (``mne.make_sphere_model`` +
``mne.make_forward_dipole``): for the EEG montage a layered sphere fitted to it (MNE's default four
layers), for the CTF MEG sensors the spherical conductor (only its centre matters: Sarvas).
Strengths are set from published amplitude ratios to the N1 (``calibrate``), not fitted to any score.
The image measures are plain pixel statistics (no filter bank shared with the toolkit's features).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .common import _bump

FIELD_DEG = 8.0  # side of the (square) image in degrees of visual angle
ECC_EDGES = (0.0, 0.3, 0.7, 1.3, 2.1, 3.2, 4.5, 5.7)  # deg; the outer ring reaches the image corners
N_WEDGES = 12  # 30-deg polar-angle wedges; the horizontal and vertical meridians are cell borders
GRID = 64  # the image is analysed at GRID x GRID pixels (1 px = FIELD_DEG / GRID deg)
BACKGROUND = 0.5  # the grey screen before and around the image (THINGS paradigms)
CONTRAST_SIGMA_DEG = 0.35  # size of the neighbourhood over which local contrast is measured
C50, NR_EXPONENT = 0.08, 2.0  # Naka-Rushton semi-saturation and exponent of the population response
MAG_K, MAG_A = 17.3, 0.75  # Horton & Hoyt (1991): k / (E + a) mm of V1 per degree

KINDS = ("contrast", "on", "off")  # local contrast; luminance increments and decrements vs the background
# Time courses (s) and weights of the three drives: darks dominate V1 (about twice the response to
# lights, Yeh, Xing & Shapley 2009) and are processed faster (Komban et al. 2014; Jansen et al. 2019)
V1_LATENCY = {"contrast": 0.080, "on": 0.088, "off": 0.076}
KIND_WEIGHT = {"contrast": 1.0, "on": 0.5, "off": 1.0}
C1_WIDTH = 0.012
V2_DELAY, V2_WEIGHT = 0.010, 0.5
P1_LATENCY, P1_WIDTH = 0.115, 0.015
N1_LATENCY, N1_WIDTH = 0.165, 0.020
# peak amplitudes for the reference stimulus (a full-contrast checkerboard in one quadrant, 1-4 deg),
# relative to the peak of the shared ERP's N1 (docs/synthetic-data.md gives the sources)
C1_RELATIVE, P1_RELATIVE, N1_RELATIVE = 0.5, 0.6, 0.3
# the ipsilateral hemisphere's P1 / N1 sources also see a stimulus, more weakly (callosal transfer)
P1_IPSILATERAL, N1_IPSILATERAL = 0.4, 0.5
FOVEAL_DEG = 0.75  # eccentricity scale of the exposed occipital pole (normals facing backwards)
POLE_DEPTH = 0.018  # m from the scalp to the occipital pole (V1 foveal confluence)
EXTRASTRIATE_DEPTH = 0.022  # m from the scalp to the lateral occipital P1 / N1 sources
EXTRASTRIATE_TILT = 0.6  # tangential share of their orientation (oblique generators; radial ones are MEG-silent)


@dataclass(frozen=True)
class Cells:
    """The visual-field tiling: centres (deg), polar angles (rad, 0 = right horizontal meridian, pi/2 =
    up), V1 area in mm^2, and the pixel masks of the GRID image (each row sums to 1 over its pixels)."""

    ecc: np.ndarray
    angle: np.ndarray
    area: np.ndarray
    field_area: np.ndarray  # deg^2
    masks: np.ndarray  # (n_cells, canvas * canvas)
    canvas: int


def _magnified_area(e0: float, e1: float, wedge: float) -> float:
    """mm^2 of V1 for a ring sector: the integral of (k / (E + a))^2 E dE dtheta."""
    def primitive(e):
        return np.log(e + MAG_A) + MAG_A / (e + MAG_A)
    return float(MAG_K**2 * wedge * (primitive(e1) - primitive(e0)))


def make_cells() -> Cells:
    """Ring x wedge cells over a canvas that holds the image and the grey screen around it."""
    canvas = int(np.ceil(GRID * 2 * ECC_EDGES[-1] / FIELD_DEG))
    deg = (np.arange(canvas) + 0.5 - canvas / 2) * FIELD_DEG / GRID
    x, y = np.meshgrid(deg, -deg)  # y up
    ecc, ang = np.hypot(x, y).ravel(), np.mod(np.arctan2(y, x), 2 * np.pi).ravel()
    wedge = 2 * np.pi / N_WEDGES
    rows, centres, angles, areas, field = [], [], [], [], []
    for e0, e1 in zip(ECC_EDGES[:-1], ECC_EDGES[1:]):
        for w in range(N_WEDGES):
            inside = (ecc >= e0) & (ecc < e1) & (ang >= w * wedge) & (ang < (w + 1) * wedge)
            rows.append(inside / max(inside.sum(), 1))
            centres.append(np.sqrt(max(e0, 0.05) * e1))
            angles.append((w + 0.5) * wedge)
            areas.append(_magnified_area(e0, e1, wedge))
            field.append(wedge / 2 * (e1**2 - e0**2))
    return Cells(np.array(centres), np.array(angles), np.array(areas), np.array(field), np.array(rows, np.float32),
                 canvas)


def _naka_rushton(x: np.ndarray) -> np.ndarray:
    return x**NR_EXPONENT / (x**NR_EXPONENT + C50**NR_EXPONENT)


def field_activations(imgs: np.ndarray, cells: Cells | None = None) -> np.ndarray:
    """(n, n_cells, len(KINDS)) population activations in [0, 1] of RGB images in [0, 1] (n, S, S, 3)
    shown centred on a grey screen: per cell the pooled local RMS contrast and the mean luminance
    increment and decrement, each through a Naka-Rushton contrast-response function."""
    cells = make_cells() if cells is None else cells
    lum = imgs[..., 0] * 0.299 + imgs[..., 1] * 0.587 + imgs[..., 2] * 0.114
    pad = (cells.canvas - GRID) // 2
    out = np.empty((len(imgs), len(cells.ecc), len(KINDS)), np.float32)
    sigma = CONTRAST_SIGMA_DEG * GRID / FIELD_DEG
    for i, image in enumerate(lum):
        small = cv2.resize(image.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
        screen = np.full((cells.canvas, cells.canvas), BACKGROUND, np.float32)
        screen[pad:pad + GRID, pad:pad + GRID] = small
        local = ndimage.gaussian_filter(screen, sigma)
        energy = ndimage.gaussian_filter((screen - local) ** 2, sigma)
        maps = np.stack([energy, np.maximum(screen - BACKGROUND, 0), np.maximum(BACKGROUND - screen, 0)])
        pooled = maps.reshape(len(KINDS), -1) @ cells.masks.T  # (kinds, cells)
        pooled[0] = np.sqrt(pooled[0])  # mean contrast energy -> RMS contrast
        out[i] = _naka_rushton(pooled).T
    return out


def quadrant_checkerboard(sx: int, sy: int, size: int = 128) -> np.ndarray:
    """(1, size, size, 3): a full-contrast checkerboard (0.5-deg checks) filling the quadrant
    (sx, sy) = (+-1, +-1) between 1 and 4 deg on the grey screen, as in the C1/P1 mapping studies."""
    deg = (np.arange(size) + 0.5 - size / 2) * FIELD_DEG / size
    x, y = np.meshgrid(deg, -deg)
    r = np.hypot(x, y)
    inside = (np.sign(x) == sx) & (np.sign(y) == sy) & (r >= 1) & (r <= 4)
    checks = np.where((np.floor(x / 0.5) + np.floor(y / 0.5)) % 2 == 0, 1.0, 0.0)
    img = np.where(inside, checks, BACKGROUND).astype(np.float32)
    return np.repeat(img[..., None], 3, axis=-1)[None]


def reference_stimulus(size: int = 128) -> np.ndarray:
    """The calibration stimulus: the checkerboard in the lower-right quadrant."""
    return quadrant_checkerboard(1, -1, size)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def source_geometry(cells: Cells, posterior: np.ndarray, scalp_radius: float, rng: np.random.Generator | None = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Positions (m, sphere-centred) and unit orientations of the V1 and V2 cells and the P1 / N1 sources.

    ``posterior``: unit vector from the head centre towards the occipital pole (Oz's direction);
    ``rng`` jitters the anatomy for one subject (None: the population template).
    """
    jitter = (lambda sd, shape=(): rng.normal(0, sd, shape)) if rng is not None else (lambda sd, shape=(): np.zeros(shape))
    up = np.array([0.0, 0.0, 1.0])
    back = _unit(posterior - posterior @ up * up)  # horizontal, towards the back of the head
    right = np.cross(up, back)  # the subject's right (+x)
    pole = _unit(posterior - 0.15 * up) * (scalp_radius - POLE_DEPTH) + jitter(0.003, 3)
    tilt = np.radians(15 + jitter(8.0))
    axis = _unit(-back * np.cos(tilt) + up * np.sin(tilt))  # along the calcarine, from the pole forwards
    k = MAG_K * np.exp(jitter(0.1))

    # contralateral hemisphere: a right-field cell (cos angle > 0) lies in the left hemisphere (-x)
    hemi = np.where(np.cos(cells.angle) > 0, -1.0, 1.0)
    phi = np.arctan2(np.sin(cells.angle), np.abs(np.cos(cells.angle)))  # + upper field, - lower field
    z = k * np.log1p(cells.ecc * np.exp(1j * phi) / MAG_A)  # mm: real along the calcarine, imag to the banks
    medial = -hemi[:, None] * right  # from each hemisphere's medial surface towards the midline
    base = pole + 1e-3 * (z.real[:, None] * axis) + 0.005 * hemi[:, None] * right
    v1_pos = base - 1e-3 * 0.3 * z.imag[:, None] * up  # upper field on the lower bank
    # effective current on the calcarine banks: up on the upper bank (lower field), down on the lower bank
    # (upper field), so C1 flips; the exposed pole (fovea) faces backwards whatever the field, so foveal
    # stimuli flip C1 less
    foveal = np.exp(-cells.ecc / FOVEAL_DEG)[:, None]
    v1_ori = _unit(-np.sin(phi)[:, None] * up + 0.35 * np.cos(phi)[:, None] * medial - foveal * axis)
    v2_pos = v1_pos - 0.006 * np.sign(phi)[:, None] * up - 0.003 * axis
    v2_ori = _unit(-0.8 * np.sin(phi)[:, None] * up + 0.3 * medial)

    quads = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)  # (field x sign, field y sign)
    p1_dir = _unit(back + 0.6 * (-quads[:, :1]) * right + (np.where(quads[:, 1:] < 0, 0.25, -0.15)) * up)
    p1_dir = _unit(p1_dir + jitter(0.05, p1_dir.shape))
    n1_dir = _unit(0.6 * back + 0.8 * np.array([[-1.0], [1.0]]) * right - 0.1 * up)
    n1_dir = _unit(n1_dir + jitter(0.05, n1_dir.shape))
    depth = scalp_radius - EXTRASTRIATE_DEPTH

    def oblique(d):  # lateral occipital cortex faces out and down-backwards: never purely radial (which
        towards = back - up  # MEG could not see at all)
        tangent = _unit(towards - (d @ towards)[:, None] * d)
        return _unit(d + EXTRASTRIATE_TILT * tangent)

    return {"v1": (v1_pos, v1_ori), "v2": (v2_pos, v2_ori),
            "p1": (depth * p1_dir, oblique(p1_dir)),  # outwards: positive over the source
            "n1": (depth * n1_dir, -oblique(n1_dir))}  # inwards: negative over the source


def pooled_drives(cells: Cells, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drives of the P1 sources (one per quadrant: right-up, right-down, left-up, left-down, each in the
    contralateral hemisphere) and the N1 sources (one per hemifield: right, left): the area-weighted mean
    activation (contrast, on and off weighted as in V1) over the cells of its own field, plus a fraction
    of the mirror field's (the ipsilateral response)."""
    weights = np.array([KIND_WEIGHT[k] for k in KINDS])
    mean = act @ (weights / weights.sum())  # (n, cells)
    right, up = np.cos(cells.angle) > 0, np.sin(cells.angle) > 0
    quads = [right & up, right & ~up, ~right & up, ~right & ~up]
    def pool(mask):  # extrastriate magnification is flatter than V1's: linear, not areal
        w = np.sqrt(cells.area * cells.field_area) * mask
        return mean @ (w / w.sum())
    p1, n1 = np.stack([pool(q) for q in quads], 1), np.stack([pool(right), pool(~right)], 1)
    return p1 + P1_IPSILATERAL * p1[:, [2, 3, 0, 1]], n1 + N1_IPSILATERAL * n1[:, [1, 0]]


@dataclass
class RetinotopicSources:
    """One subject's retinotopic sources as seen by the sensors: gain fields (n_channels, k) per source
    group, latencies and gains. ``responses`` gives the noise-free sensor signals for activations."""

    cells: Cells
    fields: dict[str, np.ndarray]
    latency_shift: dict[str, float]
    gain: dict[str, float]

    @classmethod
    def build(cls, forward, posterior: np.ndarray, scalp_radius: float, rng: np.random.Generator | None = None
              ) -> "RetinotopicSources":
        """``forward(positions, orientations) -> (n_channels, k)``: the recording's MNE forward model."""
        cells = make_cells()
        geometry = source_geometry(cells, posterior, scalp_radius, rng)
        fields = {name: forward(pos, ori) for name, (pos, ori) in geometry.items()}
        fields["v1"] = fields["v1"] * cells.area  # dipole moment grows with the activated cortical area
        fields["v2"] = fields["v2"] * cells.area
        if rng is None:
            return cls(cells, fields, {k: 0.0 for k in ("c1", "p1", "n1")}, {k: 1.0 for k in ("c1", "p1", "n1")})
        shift = {"c1": rng.normal(0, 0.004), "p1": rng.normal(0, 0.006), "n1": rng.normal(0, 0.008)}
        gain = {k: float(rng.lognormal(0, 0.25)) for k in ("c1", "p1", "n1")}
        return cls(cells, fields, shift, gain)

    def components(self, act: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Noise-free (n, n_channels, len(t)) signals of C1 (V1 + V2), P1 and N1 for activations ``act``."""
        c1 = 0.0
        for k, kind in enumerate(KINDS):
            lat = V1_LATENCY[kind] + self.latency_shift["c1"]
            for area, delay, weight in (("v1", 0.0, 1.0), ("v2", V2_DELAY, V2_WEIGHT)):
                topo = act[:, :, k] @ self.fields[area].T * (KIND_WEIGHT[kind] * weight)
                c1 = c1 + topo[:, :, None] * _bump(t, lat + delay, C1_WIDTH)
        p1_drive, n1_drive = pooled_drives(self.cells, act)
        p1 = (p1_drive @ self.fields["p1"].T)[:, :, None] * _bump(t, P1_LATENCY + self.latency_shift["p1"], P1_WIDTH)
        n1 = (n1_drive @ self.fields["n1"].T)[:, :, None] * _bump(t, N1_LATENCY + self.latency_shift["n1"], N1_WIDTH)
        return {"c1": self.gain["c1"] * c1, "p1": self.gain["p1"] * p1, "n1": self.gain["n1"] * n1}

    def responses(self, act: np.ndarray, t: np.ndarray) -> np.ndarray:
        return sum(self.components(act, t).values()).astype(np.float32)

    def scaled(self, scale: dict[str, float]) -> "RetinotopicSources":
        """The same sources with every field multiplied by its component's calibration scale."""
        group = {"v1": "c1", "v2": "c1", "p1": "p1", "n1": "n1"}
        return RetinotopicSources(self.cells, {k: v * scale[group[k]] for k, v in self.fields.items()},
                                  self.latency_shift, self.gain)


def calibrate(template: RetinotopicSources, n1_amplitude: float, sfreq: float) -> dict[str, float]:
    """Scales that give the template's C1, P1 and N1 peaks (max |value| over sensors and time) for the
    reference stimulus the published fractions of the shared ERP's N1 peak."""
    t = np.arange(round(0.3 * sfreq)) / sfreq
    parts = template.components(field_activations(reference_stimulus(), template.cells), t)
    target = {"c1": C1_RELATIVE, "p1": P1_RELATIVE, "n1": N1_RELATIVE}
    peaks = {k: float(np.abs(parts[k]).max()) for k in target}
    weak = [k for k in target if peaks[k] < 1e-6 * max(peaks.values())]
    if weak:  # a field the sensors cannot see (e.g. a radial dipole in MEG) must not be scaled up from rounding
        raise ValueError(f"retinotopic sources {weak} are invisible to these sensors (peaks {peaks})")
    return {k: target[k] * n1_amplitude / peaks[k] for k in target}
