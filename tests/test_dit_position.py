"""Position codes that tell channels apart: with one channel per patch, the region embedding alone gives
O1, Oz and O2 (or every left-occipital MEG sensor) the same code; the sensor code does not."""
from __future__ import annotations

import itertools

import pytest
import torch

from prosthesis_sim.encoders.diffusion import _sensor_positions
from prosthesis_sim.encoders.dit import DiT
from prosthesis_sim.data.dataset import make_info
from prosthesis_sim.data.regions import region_ids
from prosthesis_sim.data.things_meg import make_meg_info, things_meg_channels
from tests.fixtures.nice import CH63


def _dit(ch_names, info, sensor_code: bool) -> DiT:
    torch.manual_seed(0)
    return DiT(len(ch_names), 100, 4, 5, 6, region_ids=region_ids(ch_names), patch=(1, 25), position="region",
               hidden=32, heads=2, depth=1, sensor_positions=_sensor_positions(info), sensor_code=sensor_code)


def _distinct(codes: torch.Tensor, rows: list[int]) -> float:
    """The smallest distance between the codes of ``rows``."""
    return min(float((codes[a] - codes[b]).norm()) for a, b in itertools.combinations(rows, 2))


def test_eeg_occipital_channels_get_distinct_codes():
    info = make_info(CH63, 250.0)
    rows = [CH63.index(c) for c in ("O1", "Oz", "O2")]
    with torch.no_grad():
        region_only = _dit(CH63, info, sensor_code=False).space_position()
        with_sensors = _dit(CH63, info, sensor_code=True).space_position()
    assert _distinct(region_only, rows) == 0.0  # one region, one code: the network cannot tell them apart
    assert _distinct(with_sensors, rows) > 0.1
    # every channel has its own code
    assert _distinct(with_sensors, list(range(len(CH63)))) > 1e-3


def test_meg_left_occipital_sensors_get_distinct_codes():
    names = things_meg_channels()
    info = make_meg_info(names, 200.0)
    rows = [i for i, c in enumerate(names) if c.startswith("MLO")][:6]
    with torch.no_grad():
        codes = _dit(names, info, sensor_code=True).space_position()
    assert len(rows) == 6 and _distinct(codes, rows) > 0.05


def test_sensor_positions_come_from_the_info_and_are_checked():
    assert len(_sensor_positions(make_info(CH63, 250.0))) == 63
    with pytest.raises(ValueError, match="sensor_positions must be finite"):
        DiT(3, 100, 4, 5, 6, patch=(1, 25), hidden=32, heads=2, depth=1, sensor_positions=[[0, 0, 1]] * 2,
            sensor_code=True)
