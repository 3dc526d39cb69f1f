"""DiT habits (issue 9, section 5): one initialize_weights() as facebookresearch/DiT, every block the
identity at initialisation (adaLN gates and cross-attention output projections zero), and the code's
default prediction_type agreeing with the shipped config."""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import yaml

from prosthesis_sim.encoders.diffusion import DiffusionEncoder
from prosthesis_sim.encoders.dit import DiT

ROOT = Path(__file__).resolve().parents[1]


def _dit(**kw) -> DiT:
    torch.manual_seed(0)
    return DiT(6, 50, 4, 8, 8, patch=(None, 25), hidden=32, heads=2, depth=3, **kw)


def _inputs(model: DiT):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(3, 6, 50, generator=g), torch.tensor([10, 500, 990]), torch.randn(3, 4, 8, generator=g),
            torch.randn(3, 8, generator=g))


def test_every_block_starts_as_the_identity():
    model = _dit(conditioning=("cross", "adaln"))
    x, t, tok, pooled = _inputs(model)
    h = torch.randn(3, 2, 32)
    c = model.t_embed(t) + model.pooled_proj(pooled)
    ctx = model.token_proj(tok) + model.token_pos
    with torch.no_grad():
        for block in model.blocks:
            assert torch.equal(block(h, c, ctx), h)  # zero gates and a zero cross-attention output projection
            assert not block.cross.out_proj.weight.any() and not block.cross.out_proj.bias.any()
            assert not block.ada[1].weight.any()
        assert not model(x, t, tok, pooled).any()  # zero final layer and skip gain: the first prediction is 0


def test_initialize_weights_is_one_reproducible_call():
    model = _dit()
    w = model.patch_embed.weight.detach()
    bound = 1 / math.sqrt(w.shape[1])  # PyTorch's default for linear layers (Kaiming-uniform, a=sqrt(5))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    assert abs(float(model.t_embed.mlp[0].weight.detach().std()) - 0.02) < 0.002
    for block in model.blocks:  # self-attention keeps a live output projection
        assert block.attn.out_proj.weight.any() and not block.attn.out_proj.bias.any()
    again = _dit()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # the whole initialisation is one call: from any state it restores the zeros and unit norms
    with torch.no_grad():
        for p in again.parameters():
            p.add_(1.0)
    again.initialize_weights()
    for (name, a), b in zip(model.named_parameters(), again.parameters()):
        if name.startswith(("pos_", "token_pos", "space", "sensor")):
            continue  # position embeddings are drawn at construction, not by initialize_weights
        if not a.any():
            assert not b.any(), name
        elif torch.all(a == 1):
            assert torch.all(b == 1), name


def test_prediction_type_default_agrees_with_config():
    enc = DiffusionEncoder(partial(DiT, hidden=16, depth=1, heads=2), features=None, device="cpu")
    config = yaml.safe_load((ROOT / "configs/encoder/dit.yaml").read_text())
    assert enc.noise_scheduler.config.prediction_type == config["prediction_type"] == "sample"
