"""Per-image pictures for the HTML report, made once by the worker while the images are in memory.

``thumbs/<rel>/``: ``input.png``, ``bicubic.png``, ``zssr.png``, ``gt.png`` (at most
``THUMB`` pixels on a side); ``crop_*.png``: the same ``CROP x CROP`` region (in output
pixels) of each, at full resolution, where ZSSR and bicubic differ most, and ``crop.json``:
where that region is, so the page can draw it on the thumbnails; ``full_bicubic.png``: the
bicubic upscale at full resolution for the page's viewer, which is written nowhere else (the
ZSSR output and the ground truth are shown from their own files, unless a browser cannot show
those: then ``full_zssr.png`` / ``full_gt.png`` too).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..files.images import write_atomic
from ..files.storage import is_url

THUMB = 256
CROP = 64
# The image files Chromium, Firefox and Safari all display; a TIFF they offer to download instead.
BROWSER_SHOWS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def browser_shows(path: str | None) -> bool:
    """Whether report.html can show ``path`` itself: a local file in a format every browser displays."""
    return bool(path) and not is_url(path) and os.path.splitext(path)[1].lower() in BROWSER_SHOWS


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
    buf = io.BytesIO()
    # optimize tries every filter: worth it on thumbnails, seconds on a full-resolution picture
    im.save(buf, "PNG", optimize=max_side is not None and max_side <= THUMB)
    return buf.getvalue()


def write_thumbs(folder: Path, lr: torch.Tensor, bicubic: torch.Tensor, zssr: torch.Tensor,
                 gt: torch.Tensor | None, originals: Mapping[str, str | None] = {}) -> None:
    """``originals``: the files ``zssr`` and ``gt`` were read from or written to; one that a browser
    cannot show (a TIFF, an object store's URL) gets a full-resolution PNG here for the viewer."""
    top, left, side = most_different_region(zssr, bicubic)
    out_h, out_w = zssr.shape[-2:]
    sy, sx = lr.shape[-2] / out_h, lr.shape[-1] / out_w
    pics = {"input": lr, "bicubic": bicubic, "zssr": zssr}
    if gt is not None:
        pics["gt"] = gt[..., :out_h, :out_w]
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
        if name == "bicubic" or (name in originals and not browser_shows(originals[name])):
            write_atomic(folder / f"full_{name}.png", _png(t))
    crop_box = {"top": top, "left": left, "side": side, "height": out_h, "width": out_w}
    write_atomic(folder / "crop.json", json.dumps(crop_box).encode())
