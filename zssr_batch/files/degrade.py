"""Benchmark inputs the way the literature makes them: crop to a multiple of the scale, MATLAB-bicubic shrink.

8-bit images are rounded to 8 bits between the vertical and the horizontal
pass, as MATLAB's uint8 ``imresize`` does; this reproduces the ``LR_bicubic``
files of Set5/Set14/BSD100 bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .images import EXTENSIONS, Picture, load_image, save_image
from ..engine.resize import matlab_imresize_quantized


def degrade_picture(pic: Picture, scale: float) -> Picture:
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = pic.size
    if float(scale).is_integer():
        s = int(scale)
        h, w = h // s * s, w // s * s
        if h == 0 or w == 0:
            raise ValueError(f"image {pic.size[1]}x{pic.size[0]} is smaller than the scale {scale:g}")
    levels = 65535 if pic.bit_depth == 16 else 255

    def shrink(a):
        return None if a is None else matlab_imresize_quantized(
            torch.from_numpy(a[:, :h, :w]).double(), 1.0 / scale, levels).float().numpy()

    return Picture(shrink(pic.color), shrink(pic.alpha), pic.bit_depth, pic.icc_profile)


def degrade_path(src: str | Path, dst: str | Path, scale: float, suffix: str = "") -> list[tuple[Path, Path]]:
    """Degrade one file, or every image under a folder into the same layout; returns (input, output) pairs."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        pairs = [(p, (dst / p.relative_to(src)).with_name(p.stem + suffix + p.suffix)) for p in files]
    else:
        out = dst / (src.stem + suffix + src.suffix) if dst.is_dir() else dst
        pairs = [(src, out)]
    for a, b in pairs:
        save_image(b, degrade_picture(load_image(a), scale))
    return pairs
