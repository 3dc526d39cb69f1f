"""Implants that pulse2percept 0.11 builds from parts rather than ships ready-made."""
from __future__ import annotations

from pulse2percept.implants.cortex import Neuralink
from pulse2percept.implants.cortex.neuralink import LinearEdgeThread


def neuralink_threads(rows: int = 6, cols: int = 6, spacing_um: float = 1000.0,
                      electrodes_per_thread: int = 4, electrode_spacing_um: float = 50.0) -> Neuralink:
    """A rows x cols grid of Neuralink threads inserted straight into cortex, centred on (0, 0).

    pulse2percept's ``Neuralink`` is an ensemble of threads; ``Neuralink.from_neuropythy`` needs a
    FreeSurfer subject, so this places the threads on a regular grid in the device-local plane
    instead (the model's ``implant_position`` puts the grid on the map). Electrodes along one thread
    lie at different depths of the same column and share its place in the visual field.
    """
    if rows < 1 or cols < 1 or electrodes_per_thread < 1 or not spacing_um > 0:
        raise ValueError(f"neuralink_threads needs rows, cols, electrodes_per_thread >= 1 and "
                         f"spacing_um > 0, got {rows}, {cols}, {electrodes_per_thread}, {spacing_um}")
    threads = [LinearEdgeThread((c - (cols - 1) / 2) * spacing_um, ((rows - 1) / 2 - r) * spacing_um,
                                n_elecs=electrodes_per_thread, spacing=electrode_spacing_um)
               for r in range(rows) for c in range(cols)]
    return Neuralink(threads)
