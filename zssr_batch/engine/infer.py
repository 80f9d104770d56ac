"""Upscale with a fitted network: geometric self-ensemble and back-projection.

As the authors' ``final_test``: the input is run through the network in 8
orientations (4 rotations x mirror; only the 4 that keep the axes when the
vertical and horizontal scales differ), each output is turned back and
back-projected, the outputs are combined by their median, and the result is
back-projected once more. Orientations of one shape are batched through the
network in chunks that fit a memory budget, large images in seamless tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import Scale
from .model import ZSSRNet
from .resize import imresize


@dataclass(frozen=True)
class MemoryPlan:
    """How much of an image goes through the network at once.

    ``tile``: side of the square tiles the upscaled image is cut into (with a
    margin of ``depth`` pixels, the network's reach, so tiles join without
    seams); ``max_batch_bytes``: budget for the hidden activations of one batch.
    """

    tile: int = 1024
    max_batch_bytes: int = 2 << 30

    def smaller(self) -> "MemoryPlan | None":
        """The next plan to try after running out of memory, or None when there is none left."""
        if self.tile <= 128:
            return None
        return MemoryPlan(self.tile // 2, max(self.max_batch_bytes // 4, 64 << 20))


def _run_net(net: ZSSRNet, up: torch.Tensor, plan: MemoryPlan) -> torch.Tensor:
    n, _, h, w = up.shape
    width = max(m.out_channels for m in net.convs)
    per_image = 2 * width * h * w * up.element_size()  # two live hidden activations
    chunk = max(1, min(n, plan.max_batch_bytes // max(per_image, 1)))
    return torch.cat([net(up[i:i + chunk]).clamp(0, 1) for i in range(0, n, chunk)])


def network_upscale(net: ZSSRNet, lr: torch.Tensor, sf: Scale, out_shape: Sequence[int] | None = None,
                    plan: MemoryPlan = MemoryPlan()) -> torch.Tensor:
    """``lr``: (N, C, h, w) -> network output (N, C, H, W), clipped to [0, 1], tiled when large."""
    up = imresize(lr, sf, out_shape)
    h, w = up.shape[-2:]
    with torch.no_grad():
        if h <= plan.tile and w <= plan.tile:
            return _run_net(net, up, plan)
        margin = len(net.convs)  # each 3x3 layer reaches one pixel further
        out = torch.empty_like(up)
        for y0 in range(0, h, plan.tile):
            for x0 in range(0, w, plan.tile):
                y1, x1 = min(h, y0 + plan.tile), min(w, x0 + plan.tile)
                ya, xa = max(0, y0 - margin), max(0, x0 - margin)
                yb, xb = min(h, y1 + margin), min(w, x1 + margin)
                o = _run_net(net, up[:, :, ya:yb, xa:xb], plan)
                out[:, :, y0:y1, x0:x1] = o[:, :, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
        return out


def back_project(sr: torch.Tensor, lr: torch.Tensor, sf: Scale, iters: int,
                 down_kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Make ``sr`` (..., H, W) consistent with ``lr`` (..., h, w): add the upscaled downscaling error."""
    inv = (1.0 / sf[0], 1.0 / sf[1])
    kernel = down_kernel if down_kernel is not None else "cubic"
    for _ in range(iters):
        err = lr - imresize(sr, inv, lr.shape[-2:], kernel=kernel)
        sr = (sr + imresize(err, sf, sr.shape[-2:], kernel="cubic")).clamp(0, 1)
    return sr


def orientations(sf: Scale, use_all: bool) -> list[int]:
    """The authors' ``range(0, 1 + 7 * flip, 1 + (sf_v != sf_h))``: o < 4 rotates by o quarter turns, o >= 4 also mirrors."""
    return list(range(0, 1 + 7 * int(use_all), 1 + int(sf[0] != sf[1])))


def orient(x: torch.Tensor, o: int) -> torch.Tensor:
    x = torch.rot90(x, o % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if o >= 4 else x


def unorient(x: torch.Tensor, o: int) -> torch.Tensor:
    if o >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -(o % 4), dims=(-2, -1))


def median(stack: torch.Tensor) -> torch.Tensor:
    """numpy's median over dim 0 (the mean of the two middle values for an even count)."""
    n = stack.shape[0]
    vals = stack.sort(dim=0).values
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def ensemble_outputs(net: ZSSRNet, image: torch.Tensor, sf: Scale, use_all: bool, bp_iters: int,
                     down_kernel: torch.Tensor | None = None, plan: MemoryPlan = MemoryPlan()) -> torch.Tensor:
    """(K, C, H, W): each orientation's output, turned back and back-projected (first = plain pass)."""
    turns = orientations(sf, use_all)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for o in turns:
        by_shape.setdefault(tuple(orient(image, o).shape), []).append(o)
    outs: dict[int, torch.Tensor] = {}
    for group in by_shape.values():
        batch = torch.stack([orient(image, o) for o in group])
        sr = network_upscale(net, batch, sf, plan=plan)
        for o, out in zip(group, sr):
            outs[o] = unorient(out, o)
    stacked = torch.stack([outs[o] for o in turns])
    return back_project(stacked, image[None], sf, bp_iters, down_kernel)


def combine(outputs: torch.Tensor, how: str, image: torch.Tensor, sf: Scale, bp_iters: int,
            down_kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Fuse the orientations ('median' as the authors, or 'mean') and back-project the result once more."""
    fused = outputs.mean(0) if how == "mean" else median(outputs)
    return back_project(fused, image, sf, bp_iters, down_kernel)
