"""Sample images made on the spot, so a new user can try a run without any data.

Each picture has what ZSSR feeds on: structure that repeats inside the image
and across scales (text, bricks, rings, a tiled texture).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .images import Picture, save_image


def _text(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (245, 240, 228))
    d = ImageDraw.Draw(im)
    words = "zero shot super resolution learns from the image itself".split()
    y, k = 4, 0
    for fs in (22, 18, 15, 12, 10, 9, 8):
        font = ImageFont.load_default(fs)
        line = " ".join(words[k % len(words):] + words[: k % len(words)])
        d.text((4, y), line, fill=(30, 30, 60), font=font)
        y += int(fs * 1.3)
        k += 2
    return im


def _bricks(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (170, 165, 160))
    d = ImageDraw.Draw(im)
    rng = np.random.default_rng(0)
    bh, bw = 10, 24
    for row in range(size // bh + 1):
        off = (row % 2) * bw // 2
        for col in range(-1, size // bw + 2):
            x0, y0 = col * bw + off, row * bh
            c = tuple(int(v) for v in (150 + rng.integers(0, 60), 60 + rng.integers(0, 30), 40 + rng.integers(0, 20)))
            d.rectangle([x0 + 1, y0 + 1, x0 + bw - 2, y0 + bh - 2], fill=c)
    return im


def _rings(size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    r = np.hypot(x - 0.45, y - 0.55)
    a = np.arctan2(y - 0.55, x - 0.45)
    rgb = np.stack([0.5 + 0.45 * np.sin(40 * r), 0.5 + 0.45 * np.sin(12 * a + 10 * r),
                    0.5 + 0.45 * np.cos(25 * r * (1 + 0.3 * np.sin(3 * a)))], -1)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def _tiles(size: int) -> Image.Image:
    im = Image.new("RGB", (size, size), (20, 60, 90))
    d = ImageDraw.Draw(im)
    step = 16
    for i in range(-1, size // step + 2):
        for j in range(-1, size // step + 2):
            cx, cy, s = i * step + (j % 2) * step / 2, j * step, step * 0.42
            pts = [(cx + s * math.cos(t), cy + s * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 7)[:-1]]
            d.polygon(pts, fill=(230, 190 - 5 * (j % 5), 80), outline=(250, 250, 240))
    return im


SAMPLES = {"text": _text, "bricks": _bricks, "rings": _rings, "tiles": _tiles}


def write_samples(folder: str | Path, size: int = 128) -> list[Path]:
    """Write the sample pictures (ground truth for a ``--degrade`` run) as PNGs into ``folder``."""
    folder = Path(folder)
    paths = []
    for name, make in SAMPLES.items():
        arr = np.asarray(make(size), dtype=np.float32).transpose(2, 0, 1) / 255.0
        path = folder / f"{name}.png"
        save_image(path, Picture(arr))
        paths.append(path)
    return paths
