"""The simulated brain's retinotopic effects (prosthesis_sim.data.synth.effects): C1 polarity at the
midline for upper vs lower quadrant stimuli, P1/N1 contralateral vs ipsilateral, amplitudes relative to
the N1. With --subject, a subject's jittered anatomy (seed 0) instead of the population template.

    python bench/retinotopy_effect.py [--json FILE] [--subject S]
"""
from __future__ import annotations

import argparse
import json

from prosthesis_sim.data.synth.effects import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the rows as JSON")
    parser.add_argument("--subject", type=int, default=None, help="a subject's anatomy (seed 0) instead of the template")
    args = parser.parse_args()
    rows = measure("eeg", args.subject) + measure("meg", args.subject)
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
