"""Per-image pictures for the HTML report, made once by the worker while the images are in memory.

``thumbs/<rel>/``: ``input.png``, ``bicubic.png``, ``zssr.png``, ``gt.png`` (at most
``THUMB`` pixels on a side) and ``crop_*.png``: the same ``CROP x CROP`` region (in
output pixels) of each, at full resolution, where ZSSR and bicubic differ most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..files.images import write_atomic

THUMB = 160
CROP = 64


def most_different_region(a: torch.Tensor, b: torch.Tensor, size: int = CROP) -> tuple[int, int, int]:
    """(top, left, side) of the square window where two (C, H, W) images differ most on average."""
    h, w = a.shape[-2:]
    side = min(size, h, w)
    diff = (a - b).abs().sum(0)[None, None].float()
    stride = max(1, side // 4)
    score = F.avg_pool2d(diff, side, stride=stride)[0, 0]
    idx = int(torch.argmax(score))
    return (idx // score.shape[1]) * stride, (idx % score.shape[1]) * stride, side


def _png(arr: torch.Tensor, max_side: int | None = None) -> bytes:
    a = (arr.detach().cpu().float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_thumbs(folder: Path, lr: torch.Tensor, bicubic: torch.Tensor, zssr: torch.Tensor,
                 gt: torch.Tensor | None) -> None:
    top, left, side = most_different_region(zssr, bicubic)
    sy, sx = lr.shape[-2] / zssr.shape[-2], lr.shape[-1] / zssr.shape[-1]
    pics = {"input": lr, "bicubic": bicubic, "zssr": zssr}
    if gt is not None:
        pics["gt"] = gt[..., : zssr.shape[-2], : zssr.shape[-1]]
    for name, t in pics.items():
        write_atomic(folder / f"{name}.png", _png(t, THUMB))
        if name == "input":  # the input's pixels over the same region, enlarged by nearest neighbour
            y0, x0 = int(top * sy), int(left * sx)
            y1, x1 = max(y0 + 1, int(round((top + side) * sy))), max(x0 + 1, int(round((left + side) * sx)))
            crop = F.interpolate(t[None, :, y0:y1, x0:x1], size=(side, side), mode="nearest")[0]
        else:
            crop = t[:, top:top + side, left:left + side]
        if crop.shape[-2:] == (side, side):
            write_atomic(folder / f"crop_{name}.png", _png(crop))
