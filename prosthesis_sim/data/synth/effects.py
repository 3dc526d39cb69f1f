"""The simulated brain's retinotopic effects, measured as the C1/P1 mapping studies measure them
(bench/retinotopy_effect.py prints them; tests check their signs; docs/synthetic-data.md reports them).

For each recording and quadrant, a full-contrast checkerboard (1-4 deg) drives the sources; per row:
the C1 peak at the posterior midline (signed: it flips between upper and lower field), the correlation
of the C1 topographies of the upper and lower quadrant on the same side (negative: polarity inverts),
P1 and N1 over the contralateral vs the ipsilateral hemisphere (EEG: PO7/P7 vs PO8/P8, channel mean;
MEG: left vs right occipito-temporal sensors, RMS since fields change sign), and the C1 and P1 peaks
relative to the shared ERP's N1.
"""
from __future__ import annotations

import numpy as np

from .brain import N1_PEAK
from .common import _rng
from .recording import RECORDINGS
from .retinotopy import RetinotopicSources, calibrate, field_activations, quadrant_checkerboard


def measure(modality: str, subject: int | None = None, seed: int = 0) -> list[dict]:
    """Rows of effects for the population template (subject None) or subject ``subject`` (1-based) of ``seed``."""
    rec = RECORDINGS[modality]()
    template = RetinotopicSources.build(rec.forward, rec.posterior, rec.scalp_radius)
    scale = calibrate(template, N1_PEAK, rec.sfreq)
    sources = template if subject is None else RetinotopicSources.build(
        rec.forward, rec.posterior, rec.scalp_radius, _rng(seed, "retinotopy", subject - 1))
    sources = sources.scaled(scale)
    names = list(rec.ch_names)
    if modality == "eeg":
        mid = [names.index(c) for c in ("Oz", "POz")]
        left, right = [names.index("PO7"), names.index("P7")], [names.index("PO8"), names.index("P8")]
    else:  # CTF names: MLO/MRO = left/right occipital, MZO = midline occipital
        mid = [i for i, c in enumerate(names) if c.startswith("MZO")]
        left = [i for i, c in enumerate(names) if c.startswith(("MLO", "MLT"))]
        right = [i for i, c in enumerate(names) if c.startswith(("MRO", "MRT"))]
    t = np.arange(round(0.3 * rec.sfreq)) / rec.sfreq
    rows, c1_topo = [], {}
    for sx, sy, label in ((1, 1, "right upper"), (1, -1, "right lower"), (-1, 1, "left upper"), (-1, -1, "left lower")):
        parts = sources.components(field_activations(quadrant_checkerboard(sx, sy), sources.cells), t)
        c1 = parts["c1"][0][mid].mean(0)
        c1_topo[sx, sy] = parts["c1"][0][:, np.abs(parts["c1"][0]).max(0).argmax()]  # at the C1 peak
        contra, ipsi = (left, right) if sx > 0 else (right, left)

        def peak(x, chans):  # EEG: largest |channel mean| over time; MEG (fields change sign): largest RMS
            x = x[0][chans]
            return float(np.abs(x.mean(0)).max() if modality == "eeg" else np.sqrt((x**2).mean(0)).max())

        rows.append({
            "modality": modality, "quadrant": label,
            "c1_midline": float(c1[np.abs(c1).argmax()]),  # signed
            "c1_r_upper_lower": None,  # filled below
            "c1_peak_over_n1": float(np.abs(parts["c1"]).max() / N1_PEAK),
            "p1_contra_over_ipsi": peak(parts["p1"], contra) / peak(parts["p1"], ipsi),
            "n1_contra_over_ipsi": peak(parts["n1"], contra) / peak(parts["n1"], ipsi),
            "p1_peak_over_n1": float(np.abs(parts["p1"]).max() / N1_PEAK),
        })
    for row, (sx, sy) in zip(rows, ((1, 1), (1, -1), (-1, 1), (-1, -1))):
        row["c1_r_upper_lower"] = float(np.corrcoef(c1_topo[sx, sy], c1_topo[sx, -sy])[0, 1])
    return rows
