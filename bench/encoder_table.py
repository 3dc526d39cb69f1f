"""Train and evaluate encoders on the synthetic default and print the within-subject table (Markdown).

Every row is `psim-train` (prosthesis_sim.pipeline.train_and_evaluate) with the overrides shown; runs
go to outputs/table/<row>-<subject> (MEG: outputs/table/meg-<row>-<subject>) with their metrics.json.
Fits are cached in outputs/cache/table (keyed by what changes a fit), so a rerun with other sampling
settings (e.g. encoder.sampling_steps=4) re-evaluates without training again; train s is the fit's. Usage:
    python bench/encoder_table.py [dataset=things_eeg2|things_meg] [dataset.root=outputs/synth]
        [subjects=1,2] [table=within|ablation|paper] [rows='name prefix;other prefix']
Needs the dataset (make demo, or psim-synth out=outputs/synth; MEG: psim-synth out=outputs/synth_meg modality=meg).
"""
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_module

from prosthesis_sim.pipeline import train_and_evaluate

ROWS = {
    "mean_erp": ["encoder=mean_erp"],
    "ridge": ["encoder=ridge"],
    "dit_residual (ridge + DiT on its residual, 8 samples, no guidance)": ["encoder=dit_residual"],
    "dit (x0, 8 samples, cfg 3)": ["encoder=dit"],
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
KEYS = ("mse", "pcc", "r_across_images", "r_across_images_fraction", "top1", "top5", "top1_centered")


MEG_UNET = ["encoder.denoiser.down_block_types=[DownBlock2D,DownBlock2D,DownBlock2D,CrossAttnDownBlock2D]",
            "encoder.denoiser.up_block_types=[CrossAttnUpBlock2D,UpBlock2D,UpBlock2D,UpBlock2D]"]


def _meg_name(name: str) -> str:
    return (name.replace("patch 7x25", "patch 16x25")
            .replace("5 epochs", "2 epochs, cross-attention in the deepest level only")
            .replace("same reduction", "reduced: channels 8/16/32/32, 1 layer per block, 2 epochs, "
                                       "cross-attention in the deepest level only"))


def _meg_overrides(overrides: list[str]) -> list[str]:
    """271 x 200 MEG on 2 CPU cores: 16-channel groups keep the reduced dit_paper at 17 x 8 tokens; the
    reduced UNet's attention over 68 x 50 positions at the third level costs seconds per step, so it
    attends in the deepest level only (34 x 25) and trains 2 epochs."""
    out = [o.replace("patch=[7,25]", "patch=[16,25]").replace("train.epochs=5", "train.epochs=2") for o in overrides]
    return out + MEG_UNET if overrides[0] == "encoder=unet_paper" else out


def main(args: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in args)
    dataset = opts.pop("dataset", "things_eeg2")
    meg = dataset == "things_meg"
    root = opts.pop("dataset.root", "outputs/synth_meg" if meg else "outputs/synth")
    subjects = opts.pop("subjects", "1,2").split(",")
    only = opts.pop("rows", None)
    table = {"within": ROWS, "ablation": ABLATION, "paper": PAPER}[opts.pop("table", "within")]
    rows = {k: v for k, v in table.items() if only is None or any(k.startswith(r) for r in only.split(";"))}
    if meg:
        rows = {_meg_name(k): _meg_overrides(v) for k, v in rows.items()}
    print(f"| encoder | subject | {' | '.join(KEYS)} | train s |")
    print("|" + "---|" * (len(KEYS) + 3))
    ceilings = {}
    for name, overrides in rows.items():
        for s in subjects:
            tag = "-".join(o.split("=")[-1].strip("[]").replace(",", "x") for o in overrides[1:])
            out = Path("outputs/table") / f"{'meg-' if meg else ''}{overrides[0].split('=')[-1]}-{tag}-s{s}"
            with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
                cfg = compose("train", overrides=[*overrides, f"dataset={dataset}", f"dataset.root={root}",
                                                  f"dataset.subject={s}",
                                                  f"out={out}", "fit_cache=outputs/cache/table",
                                                  *(f"{k}={v}" for k, v in opts.items())])
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
