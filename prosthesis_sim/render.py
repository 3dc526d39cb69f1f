"""The loop's panels: frame | generated signal | topomap | decoded image | percept, drawn with OpenCV.

Everything that does not change between frames is prepared once, at construction: the topomap's
geometry comes from one call of ``mne.viz.plot_topomap`` for the recording's ``mne.Info`` (sensor
positions as MNE projects them, the head outline with nose and ears, the interpolation extent), its
interpolation is a fixed matrix (scipy's Clough-Tocher interpolant, as MNE uses, with MNE's "mean"
border points), and the outline, sensor dots, colour bar and captions are drawn into a template. Per
frame the topomap is one matrix product, a colour lookup (``RdBu_r``, limits symmetric about 0) and a
blend with the overlay. Images keep their aspect ratio and are shown at least ``size`` pixels wide
(nearest-neighbour when enlarged, so a 32 x 32 decoded image shows its pixels; area average when
shrunk). Publication figures use ``mne.viz.plot_topomap`` itself (see plots.py).
"""
from __future__ import annotations

import cv2
import matplotlib
import mne
import numpy as np
from matplotlib.figure import Figure
from scipy.interpolate import CloughTocher2DInterpolator
from scipy.spatial import Delaunay

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (30, 30, 30)          # BGR: text, outline
SENSOR = (40, 40, 40)
TRACE = (175, 175, 175)
PEAK = (40, 40, 220)        # the time shown in the topomap
LETTERBOX = (90, 90, 90)
TITLE_H, FOOTER_H = 28, 40  # caption bands above and below every panel
INTERP_RES = 96             # topomap interpolation grid; enlarged (bilinear) to the panel
COLORMAP = "RdBu_r"


def modality(info: mne.Info) -> str:
    types = set(info.get_channel_types())
    return "EEG" if types <= {"eeg"} else "MEG" if types <= {"mag", "grad"} else "M/EEG"


def colormap_lut(name: str = COLORMAP) -> np.ndarray:
    """A matplotlib colormap as a (256, 3) uint8 BGR lookup table."""
    rgb = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(rgb[:, ::-1] * 255).astype(np.uint8)


def colourise(values: np.ndarray, vmax: float, lut: np.ndarray | None = None) -> np.ndarray:
    """Signed values -> BGR with a diverging colormap: 0 is the middle colour, +-vmax the ends."""
    lut = colormap_lut() if lut is None else lut
    idx = np.clip((values / (2 * vmax) + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
    return lut[idx]


def mne_topomap_geometry(info: mne.Info) -> dict:
    """What ``mne.viz.plot_topomap`` draws for this Info: sensor xy, outline polylines, image extent.

    Read from one off-screen call (public API only): the sensor markers' offsets, the outline lines
    (head circle, nose, ears) and the interpolated image's extent, all in MNE's head coordinates.
    """
    fig = Figure()
    ax = fig.add_subplot()
    im, _ = mne.viz.plot_topomap(np.zeros(len(info.ch_names)), info, axes=ax, show=False, contours=0,
                                 sensors=True, outlines="head", res=16)
    sensors = [c for c in ax.collections if len(c.get_offsets()) == len(info.ch_names)]
    if len(sensors) != 1:
        raise RuntimeError(f"mne.viz.plot_topomap drew {len(ax.collections)} marker sets, expected one with "
                           f"{len(info.ch_names)} sensors: cannot read the sensor layout")
    return {"xy": np.asarray(sensors[0].get_offsets(), float),
            "outline": [np.asarray(line.get_xydata(), float) for line in ax.lines],
            "extent": np.asarray(im.get_extent(), float)}


def sensor_spacing(xy: np.ndarray) -> float:
    """Median distance from each sensor to its nearest neighbour."""
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1)))


def interpolation_matrix(xy: np.ndarray, centre: np.ndarray, radius: float, res: int) -> np.ndarray:
    """(res * res, n_sensors) weights: pixel values = W @ sensor values, NaN-free, 0 outside the disc.

    Clough-Tocher interpolation (scipy, as MNE's topomaps use) is linear in the sensor values, so one
    evaluation with the identity as values gives the whole map. As MNE's ``border="mean"``, points on a
    ring enclosing the disc take the mean of their Delaunay neighbours among the sensors.
    """
    n = len(xy)
    n_ring = int(np.clip(np.ceil(2 * np.pi * radius / max(sensor_spacing(xy), 1e-9)), 16, 128))
    angle = np.linspace(0, 2 * np.pi, n_ring, endpoint=False)
    ring_r = radius / np.cos(np.pi / n_ring) * 1.01  # the ring's polygon encloses the whole disc
    ring = centre + ring_r * np.stack([np.cos(angle), np.sin(angle)], 1)
    points = np.concatenate([xy, ring])
    indptr, indices = Delaunay(points).vertex_neighbor_vertices
    border = np.zeros((n_ring, n))
    for k in range(n_ring):
        nb = indices[indptr[n + k] : indptr[n + k + 1]]
        nb = nb[nb < n]
        if len(nb) == 0:  # no sensor neighbour: the nearest sensor
            nb = [int(np.argmin(np.linalg.norm(xy - ring[k], axis=1)))]
        border[k, nb] = 1.0 / len(nb)
    values = np.concatenate([np.eye(n), border])
    grid = np.linspace(-radius, radius, res)
    gx, gy = np.meshgrid(centre[0] + grid, centre[1] - grid)  # image rows go down, head y goes up
    w = CloughTocher2DInterpolator(points, values)(np.stack([gx.ravel(), gy.ravel()], 1))
    inside = ((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 <= radius**2).ravel()
    w[~inside] = 0.0
    return np.nan_to_num(w).astype(np.float32)


class Topomap:
    """Sensor values -> a ``size`` x ``size`` BGR head map with outline, sensor dots and colour bar."""

    def __init__(self, info: mne.Info, size: int):
        geo = mne_topomap_geometry(info)
        self.local = modality(info) != "EEG"
        x0, x1, y0, y1 = geo["extent"]
        self.centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        self.radius = min(x1 - x0, y1 - y0) / 2
        points = np.concatenate([geo["xy"], *geo["outline"]])
        half = np.abs(points - self.centre).max() * 1.04  # the view: disc, nose and ears, a small margin
        self.size = size
        self.bar_w = max(8, size // 30)
        self.map_px = size - 3 * self.bar_w - 34  # room on the right for the colour bar and its labels
        scale = (self.map_px - 1) / (2 * half)

        def px(xy):
            return np.stack([(xy[:, 0] - self.centre[0] + half) * scale,
                             (half - (xy[:, 1] - self.centre[1])) * scale], 1)

        self.res = min(INTERP_RES, self.map_px)
        self.weights = interpolation_matrix(geo["xy"], self.centre, self.radius, self.res)
        r_px = self.radius * scale
        c_px = px(self.centre[None])[0]
        # the disc: where the interpolated map is drawn, as flat indices (map pixels <- enlarged grid pixels)
        bx, by = int(round(c_px[0] - r_px)), int(round(c_px[1] - r_px))
        self.side = int(round(2 * r_px)) + 1
        yy, xx = np.mgrid[0 : self.side, 0 : self.side]
        inside = ((xx + bx - c_px[0]) ** 2 + (yy + by - c_px[1]) ** 2 <= r_px**2)
        if self.local:  # as MNE's extrapolate="local" (its default for MEG): up to one sensor spacing out
            hull = np.zeros((self.map_px, self.map_px), np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(px(geo["xy"])).astype(np.int32)), 1)
            reach = int(round(sensor_spacing(geo["xy"]) * scale))
            hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
            ys, xs = np.clip(yy + by, 0, self.map_px - 1), np.clip(xx + bx, 0, self.map_px - 1)
            inside &= hull[ys, xs].astype(bool)
        inside &= (xx + bx >= 0) & (xx + bx < self.map_px) & (yy + by >= 0) & (yy + by < self.map_px)
        self.disc_src = np.flatnonzero(inside)
        self.disc_dst = ((yy + by) * self.map_px + xx + bx).ravel()[self.disc_src]
        # overlay: outline and sensors, anti-aliased, as alpha over the map (only where it is drawn)
        alpha = np.zeros((self.map_px, self.map_px), np.uint8)
        shift = 4  # sub-pixel precision for OpenCV drawing
        for line in geo["outline"]:
            pts = np.round(px(line) * (1 << shift)).astype(np.int32)
            cv2.polylines(alpha, [pts], False, 255, max(1, size // 120), cv2.LINE_AA, shift)
        dot = float(np.clip(0.15 * sensor_spacing(geo["xy"]) * scale, 1.0, 2.5))  # px, smaller when dense
        for p in np.round(px(geo["xy"]) * (1 << shift)).astype(np.int32):
            cv2.circle(alpha, tuple(int(v) for v in p), int(dot * (1 << shift)), 170, -1, cv2.LINE_AA, shift)
        self.overlay_idx = np.flatnonzero(alpha)
        self.overlay_alpha = (alpha.ravel()[self.overlay_idx].astype(np.float32) / 255)[:, None]
        self.overlay_ink = np.array(INK, np.float32) * self.overlay_alpha
        self.sensor_px = px(geo["xy"])
        self.outline_px = [px(line) for line in geo["outline"]]
        self.lut = colormap_lut()
        self.background = np.full((size, size, 3), 255, np.uint8)
        self._draw_colour_bar()

    def _draw_colour_bar(self) -> None:
        s, w = self.size, self.bar_w
        top, bottom = s // 6, s - s // 6
        x = self.map_px + w
        ramp = self.lut[np.linspace(255, 0, bottom - top).astype(int)]
        self.background[top:bottom, x : x + w] = ramp[:, None]
        cv2.rectangle(self.background, (x, top), (x + w - 1, bottom - 1), INK, 1)
        self.bar = (x + w + 3, top, bottom)

    def render(self, values: np.ndarray, vmax: float, unit: str = "z") -> np.ndarray:
        """values: (n_sensors,). Colours span -vmax..vmax (vmax > 0)."""
        out = self.background.copy()
        # einsum, not BLAS: a threaded gemv this small costs more in thread hand-offs than in arithmetic
        grid = np.einsum("pc,c->p", self.weights, values.astype(np.float32)).reshape(self.res, self.res)
        colour = cv2.resize(colourise(grid, vmax, self.lut), (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        region = np.full((self.map_px * self.map_px, 3), 255, np.uint8)
        region[self.disc_dst] = colour.reshape(-1, 3)[self.disc_src]
        under = region[self.overlay_idx].astype(np.float32)
        region[self.overlay_idx] = (under * (1 - self.overlay_alpha) + self.overlay_ink + 0.5).astype(np.uint8)
        out[: self.map_px, : self.map_px] = region.reshape(self.map_px, self.map_px, 3)
        x, top, bottom = self.bar
        text(out, f"+{vmax:.2g}", (x, top + 8), 0.4)
        text(out, "0", (x, (top + bottom) // 2 + 4), 0.4)
        text(out, f"-{vmax:.2g}", (x, bottom), 0.4)
        text(out, unit, (x, bottom + 16), 0.4)
        return out


def num(value: float) -> str:
    """Two decimals, without a "-0.00"."""
    return f"{round(float(value), 2) + 0.0:.2f}"


def text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.5, colour=INK) -> None:
    cv2.putText(img, s, (int(org[0]), int(org[1])), FONT, scale, colour, 1, cv2.LINE_AA)


def fit_image(img: np.ndarray, size: int) -> np.ndarray:
    """Grey float [0, 1] or RGB uint8 image -> BGR uint8 ``size`` x ``size``, aspect kept, letterboxed.

    Enlarged with nearest neighbour (pixels stay visible), shrunk with an area average.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {img.shape}")
    u8 = img if img.dtype == np.uint8 else (np.clip(np.nan_to_num(img), 0, 1) * 255 + 0.5).astype(np.uint8)
    u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR) if u8.ndim == 2 else cv2.cvtColor(u8[..., :3], cv2.COLOR_RGB2BGR)
    h, w = u8.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    out = np.empty((size, size, 3), np.uint8)
    out[:] = LETTERBOX
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(u8, (nw, nh), interpolation=interp)
    return out


class PanelRenderer:
    """Five captioned panels side by side, each ``size`` x ``size`` pixels of content (at least 160)."""

    def __init__(self, info: mne.Info, times: np.ndarray, size: int = 240, decoder: str = "", phosphene: str = "",
                 signal: str = ""):
        if int(size) < 160:
            raise ValueError(f"loop.panel_size must be at least 160 px so the panels stay readable, got {size}")
        self.size, self.times = int(size), np.asarray(times)
        self.modality = modality(info)
        self.names = {"decoder": decoder, "phosphene": phosphene, "signal": signal}
        self.topomap = Topomap(info, self.size)
        s = self.size
        self.tile_h = TITLE_H + s + FOOTER_H
        self.xs = np.linspace(10, s - 10, len(self.times))
        self.axis_y = s - 24                         # time axis of the signal panel
        self.traces = (8, int(0.62 * s))             # butterfly: every channel
        self.gfp = (int(0.68 * s), self.axis_y - 3)  # global field power below it
        self._signal_template()

    def _signal_template(self) -> None:
        s = self.size
        panel = np.full((s, s, 3), 255, np.uint8)
        y = self.axis_y
        cv2.line(panel, (int(self.xs[0]), y), (int(self.xs[-1]), y), INK, 1)
        t0, t1 = float(self.times[0]), float(self.times[-1])
        step = 0.2 if t1 - t0 > 0.6 else 0.1
        for t in np.arange(np.ceil(t0 / step - 1e-9) * step, t1 + 1e-9, step):
            x = int(np.interp(t, self.times, self.xs))
            label = f"{round(t, 6) + 0.0:g}"
            (w, _), _ = cv2.getTextSize(label, FONT, 0.38, 1)
            cv2.line(panel, (x, y), (x, y + 4), INK, 1)
            text(panel, label, (min(max(x - w // 2, 0), s - w), y + 17), 0.38)
        text(panel, "GFP", (int(self.xs[0]), self.gfp[0] - 2), 0.38)
        self.signal_template = panel

    def signal_panel(self, z: np.ndarray) -> tuple[np.ndarray, int]:
        """z: (n_channels, n_times) z-scored -> butterfly plot, GFP below it, and the GFP peak's index."""
        if z.ndim != 2 or z.shape[1] != len(self.times):
            raise ValueError(f"expected a signal (n_channels, {len(self.times)} times), got shape {z.shape}")
        panel = self.signal_template.copy()
        top, bottom = self.traces
        span = max(3.0, float(np.abs(z).max()))
        ys = (top + bottom) / 2 - z / span * (bottom - top) / 2
        traces = np.stack([np.broadcast_to(self.xs, ys.shape), ys], -1)
        cv2.polylines(panel, list(np.round(traces).astype(np.int32)), False, TRACE, 1, cv2.LINE_8)
        gfp = z.std(0)
        peak = int(np.argmax(gfp))
        g_top, g_bottom = self.gfp
        g = g_bottom - gfp / max(float(gfp[peak]), 1e-6) * (g_bottom - g_top)
        cv2.polylines(panel, [np.round(np.stack([self.xs, g], 1)).astype(np.int32)], False, INK, 2, cv2.LINE_AA)
        x = int(self.xs[peak])
        cv2.line(panel, (x, top), (x, self.axis_y), PEAK, 1)
        return panel, peak

    def _tile(self, content: np.ndarray, title: str, footer: tuple[str, ...] = ()) -> np.ndarray:
        tile = np.full((self.tile_h, self.size, 3), 255, np.uint8)
        tile[TITLE_H : TITLE_H + self.size] = content
        text(tile, title, (6, 19), 0.52)
        for k, line in enumerate(footer[:2]):
            text(tile, line, (6, TITLE_H + self.size + 16 + 17 * k), 0.45)
        return tile

    def compose(self, frame: np.ndarray, z_signal: np.ndarray, decoded: np.ndarray, percept: np.ndarray,
                scores: dict) -> np.ndarray:
        """One BGR image: frame | generated signal | topomap at the GFP peak | decoded | percept with scores."""
        z = np.asarray(z_signal, dtype=np.float32)
        butterfly, peak = self.signal_panel(z)
        span = max(3.0, float(np.abs(z).max()))
        values = z[:, peak]
        vmax = max(1e-6, float(np.abs(values).max()))
        ms = f"{self.times[peak] * 1000:.0f} ms"
        decoded, percept = np.asarray(decoded), np.asarray(percept)

        path = "  ".join(f"{label} {num(scores[key])}" for label, key in (("SSIM", "path_ssim"), ("r", "path_pearson"))
                         if key in scores)
        extra = "  ".join(f"{p} r {num(scores[f'{p}_pearson'])}" for p in ("floor", "ceiling")
                          if f"{p}_pearson" in scores)
        tiles = [
            self._tile(fit_image(frame, self.size), "camera frame", (f"{frame.shape[1]} x {frame.shape[0]} px",)),
            self._tile(butterfly, f"generated {self.modality}" + (f": {self.names['signal']}" if self.names["signal"] else ""),
                       (f"{z.shape[0]} channels, +-{span:.1f} z", f"time (s); red: GFP peak {ms}")),
            self._tile(self.topomap.render(values, vmax), f"topomap at {ms}",
                       (f"{z.shape[0]} sensors (dots), z-scored", "red +, blue -, 0 white")),
            self._tile(fit_image(decoded, self.size), " ".join(filter(None, ("decoded", self.names["decoder"]))),
                       (f"{decoded.shape[1]} x {decoded.shape[0]} px, grey {num(decoded.min())}-{num(decoded.max())}",)),
            self._tile(fit_image(percept, self.size), " ".join(filter(None, ("percept", self.names["phosphene"]))),
                       (f"path: {path}" if path else "", extra)),
        ]
        return np.concatenate(tiles, axis=1)
