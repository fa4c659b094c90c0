"""Fusion modules: merge an IR feature map into the RGB one.

Both are residual on the RGB stream with a small initial gain: at initialisation the fused map is
close to the RGB map the pretrained later layers expect, yet every fusion and IR weight gets a
gradient from the first step (an exactly-zero gain would leave the IR stream without one).
"""

from __future__ import annotations

import torch
from torch import nn

FUSION_INIT_GAIN = 0.1


class ConvFusion(nn.Module):
    """Late fusion of CNN maps: act(rgb + BN(conv1x1(cat(rgb, ir)))), BN gain starting small.

    `act` matches what the next stage expects: ReLU after ResNet stages (their outputs are
    post-ReLU), none after EfficientNet blocks (linear bottleneck outputs).
    """

    def __init__(self, channels: int, *, act: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.constant_(self.norm.weight, FUSION_INIT_GAIN)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        both = torch.cat([rgb, ir], dim=1)  # (B,2C,H,W)
        return self.act(rgb + self.norm(self.proj(both)))  # (B,C,H,W)


class TokenFusion(nn.Module):
    """Fusion of channels-last token maps (Swin's (B,H,W,C)): rgb + gain * Linear(LN(cat))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * channels)
        self.proj = nn.Linear(2 * channels, channels)
        self.gain = nn.Parameter(torch.full((channels,), FUSION_INIT_GAIN))
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        both = torch.cat([rgb, ir], dim=-1)  # (..., 2C)
        return rgb + self.gain * self.proj(self.norm(both))  # (..., C)
