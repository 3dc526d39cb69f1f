"""The loop's four-panel view: frame | generated signal (butterfly + topomap) | decoded | percept.

Drawn with OpenCV so a frame costs milliseconds. The topomap's interpolation (sensor values -> disc of
pixels) is computed once from the sensor layout MNE gives for the recording's ``mne.Info``; per frame it
is one matrix product. Publication figures use ``mne.viz.plot_topomap`` instead (see plots.py).
"""
from __future__ import annotations

import cv2
import mne
import numpy as np


def sensor_xy(info: mne.Info) -> np.ndarray:
    """2-D sensor positions in [-1, 1] from MNE's layout for these sensors."""
    if any(t == "eeg" for t in info.get_channel_types()):
        pos = mne.channels.make_eeg_layout(info).pos[:, :2]
    else:
        pos = mne.channels.find_layout(info).pos[:, :2]
    pos = pos - (pos.min(0) + pos.max(0)) / 2
    return pos / (np.abs(pos).max() + 1e-9) * 0.9


def topomap_weights(xy: np.ndarray, size: int, width: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Gaussian interpolation weights (pixels x sensors) and the head-disc mask."""
    grid = np.linspace(-1, 1, size)
    gx, gy = np.meshgrid(grid, -grid)  # image rows go down, head y goes up
    d2 = (gx.ravel()[:, None] - xy[:, 0]) ** 2 + (gy.ravel()[:, None] - xy[:, 1]) ** 2
    w = np.exp(-d2 / (2 * width**2))
    w /= w.sum(1, keepdims=True)
    return w.astype(np.float32), (gx**2 + gy**2 <= 1.0)


def colourise(values: np.ndarray, vmax: float) -> np.ndarray:
    """Signed values -> BGR with a diverging colormap (0 in the middle)."""
    u8 = np.clip((values / (2 * vmax) + 0.5) * 255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)


class PanelRenderer:
    def __init__(self, info: mne.Info, times: np.ndarray, size: int = 240):
        self.size, self.times = size, times
        self.weights, self.mask = topomap_weights(sensor_xy(info), size // 2)

    def _grey(self, img: np.ndarray) -> np.ndarray:
        u8 = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype != np.uint8 else img
        if u8.ndim == 2:
            u8 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR)
        else:
            u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
        return cv2.resize(u8, (self.size, self.size), interpolation=cv2.INTER_NEAREST)

    def signal_panel(self, z: np.ndarray) -> np.ndarray:
        """z: (n_channels, n_times) z-scored. Top: butterfly plot; bottom: topomap at the GFP peak."""
        s = self.size
        panel = np.full((s, s, 3), 255, np.uint8)
        half = s // 2
        span = max(3.0, float(np.abs(z).max()))
        xs = np.linspace(4, s - 4, z.shape[1])
        for ch in z:
            ys = half / 2 - ch / span * (half / 2 - 4)
            cv2.polylines(panel, [np.stack([xs, ys], 1).astype(np.int32)], False, (150, 150, 150), 1, cv2.LINE_AA)
        gfp = z.std(0)
        peak = int(np.argmax(gfp))
        cv2.line(panel, (int(xs[peak]), 0), (int(xs[peak]), half), (0, 0, 255), 1)
        values = (self.weights @ z[:, peak]).reshape(self.mask.shape)
        topo = colourise(values, max(1e-6, float(np.abs(z[:, peak]).max())))
        topo[~self.mask] = 255
        x0 = (s - topo.shape[1]) // 2
        panel[half : half + topo.shape[0], x0 : x0 + topo.shape[1]] = topo
        cv2.putText(panel, f"{self.times[peak] * 1000:.0f} ms", (4, s - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        return panel

    def compose(self, frame: np.ndarray, z_signal: np.ndarray, decoded: np.ndarray, percept: np.ndarray,
                scores: dict) -> np.ndarray:
        panels = [self._grey(frame), self.signal_panel(z_signal), self._grey(decoded), self._grey(percept)]
        for p, title in zip(panels, ("frame", "generated signal", "decoded", "percept")):
            cv2.putText(p, title, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 160, 0), 1, cv2.LINE_AA)
        text = f"ssim {scores['path_ssim']:.2f}  r {scores['path_pearson']:.2f}"
        cv2.putText(panels[3], text, (4, self.size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 160, 0), 1, cv2.LINE_AA)
        return np.concatenate(panels, axis=1)
