"""The paper's v1 denoiser: diffusers' UNet2DConditionModel over the (channels x time) signal image.

The signal is a one-channel 2-D "image" of n_channels x n_times (63 x 250 for EEG). diffusers passes
explicit upsample sizes, so sides that are not multiples of 8 work without padding; the output shape is
checked anyway. Image features are projected to ``cross_attention_dim`` (768 in the paper) and used as
the cross-attention keys/values; with ``inputs='pooled'`` that is the paper's single pooled CLIP token.
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn


class UNetDenoiser(nn.Module):
    def __init__(
        self,
        n_channels: int,
        n_times: int,
        n_tokens: int,
        token_dim: int,
        pooled_dim: int,
        region_ids: list[int] | None = None,  # the UNet sees the montage as an image: no region encoding
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim: int = 768,
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        self.n_channels, self.n_times = n_channels, n_times
        self.token_proj = nn.Linear(token_dim, cross_attention_dim)
        self.token_pos = nn.Parameter(torch.randn(n_tokens, cross_attention_dim) * 0.02)
        self.unet = UNet2DConditionModel(
            sample_size=(n_channels, n_times),
            in_channels=1,
            out_channels=1,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            cross_attention_dim=cross_attention_dim,
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        out = self.unet(x[:, None], t, encoder_hidden_states=self.token_proj(tokens) + self.token_pos).sample[:, 0]
        if out.shape != x.shape:
            raise RuntimeError(f"UNet returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return out
