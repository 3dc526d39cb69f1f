"""The circularity check: does a decoder's target space equal an encoder's feature space?

An encoder conditioned on features F writes a clean function of F into its signals; a decoder trained
to map signals into F reads F back, better than from any real brain response (measured here: top-1
0.94 from ridge-generated signals against 0.40 from the simulator's noise-free truth, both with Gabor
features). The check compares configurations, not code: every ``features`` entry with a ``_target_``
anywhere in the encoder's config against every one in the decoder's (a retrieval decoder's nested
embedding included). The same applies to CLIP on real data: a CLIP-conditioned encoder scored by a
CLIP-space decoder is flagged.
"""
from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


def feature_spaces(config) -> dict[str, str]:
    """{canonical JSON: ``_target_``} of every ``features`` sub-config in ``config`` (a plain dict)."""
    found: dict[str, str] = {}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "features" and isinstance(value, dict) and "_target_" in value:
                    found[json.dumps(value, sort_keys=True)] = str(value["_target_"])
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def shared_spaces(encoder_config, decoder_config) -> list[str]:
    """The ``_target_`` of every feature space (same class and settings) both configs use."""
    enc, dec = feature_spaces(encoder_config), feature_spaces(decoder_config)
    return sorted({enc[k] for k in enc.keys() & dec.keys()})


def warn_circular(encoders: dict[str, dict], decoders: dict[str, dict]) -> dict[tuple[str, str], str]:
    """Log a warning for every (encoder, decoder) pair that shares a feature space; return them."""
    pairs = {}
    for enc_name, enc_cfg in encoders.items():
        for dec_name, dec_cfg in decoders.items():
            shared = shared_spaces(enc_cfg, dec_cfg)
            if shared:
                pairs[(enc_name, dec_name)] = ", ".join(shared)
                log.warning("encoder %r and decoder %r use the same feature space (%s): the decoder reads the "
                            "encoder's conditioning back from its signals, and the row measures that, not the "
                            "brain (give the decoder its own space: features@decoder_features=...)",
                            enc_name, dec_name, pairs[(enc_name, dec_name)])
    return pairs
