"""Train and evaluate encoders on the synthetic default and print the within-subject table (Markdown).

Every row is `psim-train` (prosthesis_sim.pipeline.train_and_evaluate) with the overrides shown; runs
go to outputs/table/<row>-<subject> with their metrics.json. Usage:
    python bench/encoder_table.py [dataset.root=outputs/synth] [subjects=1,2] [table=within|ablation]
Needs the dataset (make demo, or psim-synth out=outputs/synth).
"""
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from prosthesis_sim.pipeline import train_and_evaluate

ROWS = {
    "mean_erp": ["encoder=mean_erp"],
    "ridge": ["encoder=ridge"],
    "dit (default: x0, 8 samples, cfg 3)": ["encoder=dit"],
    "dit, epsilon prediction": ["encoder=dit", "encoder.prediction_type=epsilon"],
}
ABLATION = {  # the paper's conditioning ablation on the default DiT (Tables 6-9), plus token cross-attention
    "addition (pooled)": ["encoder=dit", "encoder.denoiser.conditioning=[add]"],
    "concatenation (pooled)": ["encoder=dit", "encoder.denoiser.conditioning=[concat]"],
    "cross-attention (pooled token)": ["encoder=dit", "encoder.denoiser.conditioning=[cross]", "encoder.inputs=pooled"],
    "cross-attention (token sequence)": ["encoder=dit", "encoder.denoiser.conditioning=[cross]"],
}
KEYS = ("mse", "pcc", "pcc_channel", "top1", "top5", "pcc_fraction_of_ceiling")


def main(args: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in args)
    root = opts.pop("dataset.root", "outputs/synth")
    subjects = opts.pop("subjects", "1,2").split(",")
    only = opts.pop("rows", None)
    table = ABLATION if opts.pop("table", "within") == "ablation" else ROWS
    rows = {k: v for k, v in table.items() if only is None or k.split(" ")[0] in only.split(",")}
    print(f"| encoder | subject | {' | '.join(KEYS)} | train s |")
    print("|" + "---|" * (len(KEYS) + 3))
    ceilings = {}
    for name, overrides in rows.items():
        for s in subjects:
            tag = "-".join(o.split("=")[-1].strip("[]") for o in overrides[1:])
            out = Path("outputs/table") / f"{overrides[0].split('=')[-1]}-{tag}-s{s}"
            with initialize_config_module("configs", version_base="1.3"):
                cfg = compose("train", overrides=[*overrides, f"dataset.root={root}", f"dataset.subject={s}",
                                                  f"out={out}", *(f"{k}={v}" for k, v in opts.items())])
            res = train_and_evaluate(cfg, out)
            ceilings[s] = res["noise_ceiling"]["noise_ceiling"]
            m = res["encoder"]
            print(f"| {name} | {s} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + f" | {res['train_s']:.0f} |",
                  flush=True)
    print("\nnoise ceiling: " + ", ".join(f"subject {s}: {c:.3f}" for s, c in ceilings.items()))


if __name__ == "__main__":
    start = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - start:.0f} s)")
