"""Train and evaluate encoders on the synthetic default and print the within-subject table (Markdown).

Every row is `psim-train` (prosthesis_sim.pipeline.train_and_evaluate) with the overrides shown; runs
go to outputs/table/<row>-<subject> with their metrics.json. Usage:
    python bench/encoder_table.py [dataset.root=outputs/synth] [subjects=1,2] [table=within|ablation|paper]
        [rows='name prefix;other prefix']
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
PAPER = {  # the paper's two architectures, shrunk to what 2 CPU cores train in minutes (stated in the row)
    "dit_paper (reduced: hidden 64, depth 2, patch 7x25, 100 epochs)": [
        "encoder=dit_paper", "encoder.denoiser.hidden=64", "encoder.denoiser.depth=2", "encoder.denoiser.heads=4",
        "encoder.denoiser.patch=[7,25]", "encoder.sampling_steps=25", "train.epochs=100"],
    "unet_paper (reduced: channels 8/16/32/32, 1 layer per block, 5 epochs, DDIM 25)": [
        "encoder=unet_paper", "encoder.denoiser.block_out_channels=[8,16,32,32]", "encoder.denoiser.norm_num_groups=8",
        "encoder.denoiser.cross_attention_dim=32", "encoder.denoiser.layers_per_block=1", "encoder.sampler=ddim",
        "encoder.sampling_steps=25", "train.epochs=5", "train.batch_size=16"],
    "unet_paper, x0 prediction (same reduction)": [
        "encoder=unet_paper", "encoder.denoiser.block_out_channels=[8,16,32,32]", "encoder.denoiser.norm_num_groups=8",
        "encoder.denoiser.cross_attention_dim=32", "encoder.denoiser.layers_per_block=1", "encoder.sampler=ddim",
        "encoder.sampling_steps=25", "train.epochs=5", "train.batch_size=16", "encoder.prediction_type=sample"],
}
KEYS = ("mse", "pcc", "pcc_channel", "top1", "top5", "pcc_fraction_of_ceiling")


def main(args: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in args)
    root = opts.pop("dataset.root", "outputs/synth")
    subjects = opts.pop("subjects", "1,2").split(",")
    only = opts.pop("rows", None)
    table = {"within": ROWS, "ablation": ABLATION, "paper": PAPER}[opts.pop("table", "within")]
    rows = {k: v for k, v in table.items() if only is None or any(k.startswith(r) for r in only.split(";"))}
    print(f"| encoder | subject | {' | '.join(KEYS)} | train s |")
    print("|" + "---|" * (len(KEYS) + 3))
    ceilings = {}
    for name, overrides in rows.items():
        for s in subjects:
            tag = "-".join(o.split("=")[-1].strip("[]").replace(",", "x") for o in overrides[1:])
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
