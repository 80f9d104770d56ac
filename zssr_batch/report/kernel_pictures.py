"""Pictures of an image's downscaling kernel for report.html, beside its thumbnails
(``thumbs/<rel>/``, see ``report.thumbs``): ``kernel.png``, the kernel its fit used, and
``kernel_true.png``, the one that made its input where that is known (a random-kernel set's
``kernels/X<s>/``). Both on one grid of taps, centred on their centres of mass, ``TAP`` pixels a
tap, white at each one's own peak and black at 0 and below: shapes and widths compare at a glance.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.kernels import centred
from ..files.images import write_atomic

TAP = 8  # pixels a tap: a 21x21 kernel is a 168-pixel square


def kernel_png(kernel: np.ndarray, side: int) -> bytes:
    """``kernel`` centred on a ``side x side`` grid (odd), as an 8-bit grey PNG."""
    k = np.clip(centred(kernel, side), 0, None)
    a = (k / k.max() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.kron(a, np.ones((TAP, TAP), dtype=np.uint8))).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_kernel_pictures(folder: Path, used: np.ndarray, true: np.ndarray | None) -> None:
    side = 2 * (max(*used.shape, *(true.shape if true is not None else ())) // 2) + 1
    write_atomic(folder / "kernel.png", kernel_png(used, side))
    if true is not None:
        write_atomic(folder / "kernel_true.png", kernel_png(true, side))
