"""The ZSSR network: ``depth`` 3x3 convolutions, ReLU between them, linear last layer.

It learns the residual over the bicubic-upscaled input (``out = x + net(x)``),
without biases, weights drawn from N(0, init_variance / fan_in) as the
authors' TensorFlow code draws them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ZSSRNet(nn.Module):
    def __init__(self, channels: int = 3, depth: int = 8, width: int = 64, init_variance: float = 0.1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if depth < 2 or width < 1 or channels < 1:
            raise ValueError(f"ZSSRNet needs depth >= 2, width >= 1, channels >= 1; got {depth}, {width}, {channels}")
        sizes = [channels] + [width] * (depth - 1) + [channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False) for cin, cout in zip(sizes[:-1], sizes[1:])
        )
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.normal_(0.0, math.sqrt(init_variance / fan_in), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, C, H, W) bicubic-upscaled image -> (N, C, H, W), unclipped."""
        h = x
        for conv in self.convs[:-1]:
            h = torch.relu(conv(h))
        return x + self.convs[-1](h)
