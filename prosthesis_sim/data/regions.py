"""Brain regions from sensor names, for the region part of the DiT's spatio-temporal position encoding.

10-10 / 10-05 EEG names carry their region in the letter prefix (Fp1, AF3, FC5, CPz, PO7, O1 ...);
CTF MEG names carry it in the third letter (MLO11 = left occipital, MRT22 = right temporal, MZC01 =
midline central). Regions: frontal, central, temporal, parietal, occipital.
"""
from __future__ import annotations

import re

REGIONS = ("frontal", "central", "temporal", "parietal", "occipital")

# longest prefixes first, so 'FT' is not read as 'F' and 'PO' not as 'P'
_EEG_PREFIXES = (
    ("Fp", "frontal"), ("AF", "frontal"), ("FT", "temporal"), ("FC", "central"), ("F", "frontal"),
    ("TP", "temporal"), ("T", "temporal"), ("CP", "central"), ("C", "central"), ("PO", "occipital"),
    ("P", "parietal"), ("O", "occipital"), ("I", "occipital"), ("A", "temporal"), ("M", "temporal"),
)
_CTF = re.compile(r"^M[LRZ]([FCTPO])\d")
_CTF_REGION = {"F": "frontal", "C": "central", "T": "temporal", "P": "parietal", "O": "occipital"}


def brain_region(name: str) -> str:
    """The region of one EEG (10-10) or CTF MEG sensor; ValueError naming it when unknown."""
    m = _CTF.match(name)
    if m:
        return _CTF_REGION[m.group(1)]
    for prefix, region in _EEG_PREFIXES:
        rest = name[len(prefix):]
        if name.startswith(prefix) and (rest == "z" or rest.isdigit()):
            return region
    raise ValueError(f"channel {name!r}: no brain region known (expected a 10-10 EEG or CTF MEG sensor name)")


def region_ids(ch_names: list[str]) -> list[int]:
    """Index into REGIONS for each channel."""
    return [REGIONS.index(brain_region(n)) for n in ch_names]
