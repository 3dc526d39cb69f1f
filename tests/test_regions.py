"""Brain regions from sensor names (10-10 EEG and CTF MEG)."""
import pytest

from prosthesis_sim.data.regions import REGIONS, brain_region, region_ids
from tests.fixtures.nice import CH63


@pytest.mark.parametrize("name, region", [
    ("Fp1", "frontal"), ("AFz", "frontal"), ("F7", "frontal"), ("FT9", "temporal"), ("FC5", "central"),
    ("Cz", "central"), ("T8", "temporal"), ("TP10", "temporal"), ("CP3", "central"), ("P7", "parietal"),
    ("PO8", "occipital"), ("O1", "occipital"), ("Oz", "occipital"), ("Iz", "occipital"),
    ("MLO11", "occipital"), ("MRT22-1609", "temporal"), ("MZC01", "central"), ("MLF14", "frontal"),
    ("MRP35", "parietal"),
])
def test_known_sensors(name, region):
    assert brain_region(name) == region


def test_all_63_things_eeg2_channels_have_regions():
    ids = region_ids(CH63)
    assert len(ids) == 63 and set(ids) == set(range(len(REGIONS)))
    assert ids[CH63.index("Oz")] == REGIONS.index("occipital")


@pytest.mark.parametrize("name", ["EOG1", "Fz1x", "STI014", "foo"])
def test_unknown_sensor_is_named(name):
    with pytest.raises(ValueError, match=name):
        brain_region(name)
