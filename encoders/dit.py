"""A diffusion transformer (DiT) denoiser for M/EEG signals, cross-attending to image feature tokens.

After Peebles & Xie's DiT (adaLN-Zero blocks, timestep conditioning through adaptive LayerNorm), with a
cross-attention layer per block whose queries are brain-signal patches and whose keys/values are the
image feature tokens (Xu et al. v2). A signal (n_channels x n_times) is cut into patches of
``patch = (channels_per_patch, samples_per_patch)`` (``None`` channels: all channels in one patch, so one
config fits 63-channel EEG and 271-channel MEG); both axes are zero-padded up to a multiple of the
patch size and the padding is removed at the end with an explicit shape check, never a silent crop.
The position encoding is learnable and factorised: one embedding per channel group (space) plus one
per time patch (or a brain-region embedding, see ``position``).
"""
from __future__ import annotations

import inspect
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Diffusion step -> vector: sinusoidal frequencies followed by a small MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class DiTBlock(nn.Module):
    """Self-attention over signal patches, cross-attention to image tokens, MLP; adaLN-Zero gated."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, cross: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(hidden, heads, batch_first=True) if cross else None
        self.norm_cross = nn.LayerNorm(hidden, eps=1e-6) if cross else None
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.ada(c)[:, None].chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_a, scale_a)
        x = x + gate_a * self.attn(h, h, h, need_weights=False)[0]
        if self.cross is not None:
            q = self.norm_cross(x)
            x = x + self.cross(q, ctx, ctx, need_weights=False)[0]
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


CONDITIONING = ("cross", "adaln", "add", "concat")


def check_size(hidden: int, heads: int, depth: int, mlp_ratio: float) -> None:
    """Fail on a model size the layers cannot build, naming the settings (torch's own check is a bare
    AssertionError deep inside nn.MultiheadAttention)."""
    for name, value in (("hidden", hidden), ("heads", heads), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"encoder.denoiser.{name}={value!r}: must be a positive integer")
    if not mlp_ratio > 0 or int(hidden * mlp_ratio) < 1:
        raise ValueError(f"encoder.denoiser.mlp_ratio={mlp_ratio!r}: must be positive (MLP width = hidden x mlp_ratio "
                         f"= {hidden} x {mlp_ratio})")
    if hidden % heads:
        lower, upper = hidden // heads * heads, (hidden // heads + 1) * heads
        widths = " or ".join(str(h) for h in (lower, upper) if h > 0)
        divisors = ", ".join(str(h) for h in range(1, min(hidden, 16) + 1) if hidden % h == 0)
        raise ValueError(f"encoder.denoiser.hidden={hidden} is not divisible by encoder.denoiser.heads={heads}: "
                         f"attention splits the width evenly over the heads, so hidden must be a multiple of heads "
                         f"(e.g. hidden={widths} with {heads} heads, or heads in {divisors} with hidden={hidden})")


class DiT(nn.Module):
    """eps or x0 = DiT(x_t, t, image tokens, pooled image vector); x_t: (batch, n_channels, n_times).

    conditioning: how the image reaches the network (any combination, for the paper's ablation):

    - ``cross``: every block cross-attends to the image tokens (a token sequence; with the encoder's
      inputs='pooled' it is the single pooled token, whose attention weight is always 1);
    - ``adaln``: the pooled vector joins the timestep in the adaptive LayerNorm of every block;
    - ``add``: the projected pooled vector is added to every signal patch embedding;
    - ``concat``: it is concatenated to every patch embedding, then projected back to the width.

    position: 'learned' (one embedding per channel group) or 'region' (the mean embedding of the
    brain regions of the group's channels, from ``region_ids``); a time-patch embedding is added to both.
    sensor_code: add a per-sensor code, a learned projection of sinusoidal features of each channel's
    position (``sensor_positions``, from the dataset's mne.Info), averaged over the group's channels:
    with one channel per patch, O1, Oz and O2 share a brain region but not a code, so the network can
    tell them apart. Off, or without positions, the groups are told apart by ``position`` alone.
    The image tokens get a learned position embedding of their own: the keys must say where in the
    image a token comes from (Gabor grid cells carry no position).
    """

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        n_tokens: int,
        token_dim: int,
        pooled_dim: int,
        region_ids: list[int] | None = None,
        patch: tuple[int | None, int] = (None, 25),
        hidden: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        position: str = "learned",
        conditioning: tuple[str, ...] = ("cross", "adaln"),
        sensor_positions: list[list[float]] | None = None,
        sensor_code: bool = False,
        sensor_frequencies: int = 6,
    ):
        super().__init__()
        check_size(hidden, heads, depth, mlp_ratio)
        if len(patch) != 2:
            raise ValueError(f"patch must be (channels, samples), got {patch}")
        pc, pt = (n_channels if patch[0] is None else int(patch[0])), int(patch[1])
        if pc < 1 or pt < 1:
            raise ValueError(f"patch sizes must be positive, got {patch}")
        self.conditioning = tuple(conditioning)
        unknown = set(self.conditioning) - set(CONDITIONING)
        if unknown or not self.conditioning:
            raise ValueError(f"conditioning must be a non-empty subset of {CONDITIONING}, got {list(conditioning)}")
        self.n_channels, self.n_times, self.patch = n_channels, n_times, (pc, pt)
        self.pad = ((-n_channels) % pc, (-n_times) % pt)
        self.grid = ((n_channels + self.pad[0]) // pc, (n_times + self.pad[1]) // pt)
        self.patch_embed = nn.Linear(pc * pt, hidden)
        self.pos_time = nn.Parameter(torch.randn(self.grid[1], hidden) * 0.02)
        self._build_space_position(position, region_ids, hidden)
        self._build_sensor_code(sensor_positions if sensor_code else None, sensor_frequencies, hidden)
        self.t_embed = TimestepEmbedder(hidden)
        self.pooled_proj = nn.Linear(pooled_dim, hidden)
        if "cross" in self.conditioning:
            self.token_proj = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, hidden))
            self.token_pos = nn.Parameter(torch.randn(n_tokens, hidden) * 0.02)
        if "concat" in self.conditioning:
            self.concat_proj = nn.Linear(2 * hidden, hidden)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, heads, mlp_ratio, cross="cross" in self.conditioning) for _ in range(depth)
        )
        self.final = FinalLayer(hidden, pc * pt)
        # Skip path: a patch holds more numbers than the hidden width, so white noise cannot pass
        # through the tokens; g(t) * x_t carries it, and the network models the low-rank signal part.
        self.skip = nn.Linear(hidden, 1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place, as DiT does: every layer its PyTorch default (unit
        LayerNorms, Kaiming-uniform linear and attention projections), N(0, 0.02) for the timestep
        MLP, and zeros where a block must start as the identity: the adaLN modulation (gates 0), every
        cross-attention output projection (so the image enters through learned, not random, paths) and
        the final layer and skip gain (the first prediction is 0). DiT's Xavier-uniform linear layers
        were tried and learned less here (docs/encoders.md, "Regression plus diffusion")."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
            elif isinstance(module, nn.MultiheadAttention):  # as its constructor: Xavier q/k/v, zero biases
                nn.init.xavier_uniform_(module.in_proj_weight)
                nn.init.zeros_(module.in_proj_bias)
        for module in self.modules():  # after the loop above, which reset the projections' biases
            if isinstance(module, nn.MultiheadAttention):
                nn.init.zeros_(module.out_proj.bias)
        for layer in self.t_embed.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        zeroed = [self.final.ada[1], self.final.linear, self.skip]
        for block in self.blocks:
            zeroed.append(block.ada[1])
            if block.cross is not None:
                zeroed.append(block.cross.out_proj)
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def check_settings(cls, **settings) -> None:
        """The constructor's size check on the settings of a partial config (``DiffusionEncoder`` runs it
        at construction, so a bad size fails before the features are computed, not after)."""
        params = inspect.signature(cls.__init__).parameters
        value = {name: settings.get(name, params[name].default) for name in ("hidden", "heads", "depth", "mlp_ratio")}
        check_size(**value)

    def _build_space_position(self, position: str, region_ids: list[int] | None, hidden: int) -> None:
        gc, pc = self.grid[0], self.patch[0]
        if position == "learned":
            self.pos_space = nn.Parameter(torch.randn(gc, hidden) * 0.02)
        elif position == "region":
            if region_ids is None or len(region_ids) != self.n_channels:
                raise ValueError(f"position='region' needs one region id per channel ({self.n_channels}), "
                                 f"got {None if region_ids is None else len(region_ids)}")
            n_regions = max(region_ids) + 1
            share = torch.zeros(gc, n_regions)  # share[g, r]: fraction of group g's real channels in region r
            for ch, r in enumerate(region_ids):
                share[ch // pc, r] += 1
            self.register_buffer("region_share", share / share.sum(1, keepdim=True))
            self.region_embed = nn.Parameter(torch.randn(n_regions, hidden) * 0.02)
        else:
            raise ValueError(f"position must be 'learned' or 'region', got {position!r}")
        self.position = position

    def _build_sensor_code(self, positions: list[list[float]] | None, n_freq: int, hidden: int) -> None:
        self.sensor_proj = None
        if positions is None:
            return
        xyz = torch.as_tensor(positions, dtype=torch.float32)
        if xyz.shape != (self.n_channels, 3) or not torch.isfinite(xyz).all():
            raise ValueError(f"sensor_positions must be finite (x, y, z) for each of the {self.n_channels} channels, "
                             f"got shape {tuple(xyz.shape)}")
        xyz = xyz - xyz.mean(dim=0)
        xyz = xyz / xyz.norm(dim=1).max().clamp_min(1e-9)  # the head fits in the unit ball
        freqs = math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32)
        angles = (xyz[:, :, None] * freqs).reshape(self.n_channels, -1)
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (channels, 6 n_freq)
        gc, pc = self.grid[0], self.patch[0]
        share = torch.zeros(gc, self.n_channels)  # mean over the group's real channels
        for ch in range(self.n_channels):
            share[ch // pc, ch] = 1.0
        self.register_buffer("sensor_features", (share / share.sum(1, keepdim=True)) @ features)
        self.sensor_proj = nn.Linear(features.shape[1], hidden)

    def space_position(self) -> torch.Tensor:
        """(channel groups, hidden): the position code of each channel group (before the time code)."""
        space = self.pos_space if self.position == "learned" else self.region_share @ self.region_embed
        if self.sensor_proj is not None:
            space = space + self.sensor_proj(self.sensor_features)
        return space

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        (pc, pt), (gc, gt) = self.patch, self.grid
        x = F.pad(x, (0, self.pad[1], 0, self.pad[0]))
        return x.reshape(len(x), gc, pc, gt, pt).permute(0, 1, 3, 2, 4).reshape(len(x), gc * gt, pc * pt)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        (pc, pt), (gc, gt) = self.patch, self.grid
        x = p.reshape(len(p), gc, gt, pc, pt).permute(0, 1, 3, 2, 4).reshape(len(p), gc * pc, gt * pt)
        return x[:, : self.n_channels, : self.n_times]  # removes exactly the padding added in patchify

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (self.n_channels, self.n_times):
            raise ValueError(
                f"DiT was built for signals of shape ({self.n_channels}, {self.n_times}), got {tuple(x.shape[1:])}"
            )
        space = self.space_position()
        pos = (space[:, None] + self.pos_time[None]).reshape(-1, space.shape[1])
        h = self.patch_embed(self.patchify(x)) + pos
        t_emb = self.t_embed(t)
        image = self.pooled_proj(pooled)
        c = t_emb + image if "adaln" in self.conditioning else t_emb
        if "add" in self.conditioning:
            h = h + image[:, None]
        if "concat" in self.conditioning:
            h = self.concat_proj(torch.cat([h, image[:, None].expand_as(h)], dim=-1))
        ctx = self.token_proj(tokens) + self.token_pos if "cross" in self.conditioning else None
        for block in self.blocks:
            h = block(h, c, ctx)
        return self.unpatchify(self.final(h, c)) + self.skip(t_emb)[:, :, None] * x
