"""Benchmark inputs the way the literature makes them.

Bicubic (``degrade_path``): crop to a multiple of the scale, MATLAB-bicubic shrink. 8-bit
images are rounded to 8 bits between the vertical and the horizontal pass, as MATLAB's uint8
``imresize`` does; this reproduces the ``LR_bicubic`` files of Set5/Set14/BSD100 bit for bit.

Random kernels (``degrade_random_kernels``, ``degrade --random-kernels``): a blind-SR set such as
DIV2KRK or the authors' BSD100RK, made from any folder of ground truths by the recipe of the
authors' BlindSR_dataset_generator (github.com/assafshocher/BlindSR_dataset_generator). Per image,
at integer scale s: a kernel from ``engine.kernels.random_kernel`` (an anisotropic Gaussian whose
covariance eigenvalues are each uniform in [0.175 s, 2.5 s], at an angle uniform in [0, pi), times
multiplicative noise uniform in +-0.4, drawn on a 21x21 grid at x4 (17 at x2, 19 at x3), its centre
of mass moved by the authors' kernel shift); the ground truth, cropped to a multiple of s,
correlated with it (mirrored borders, scipy's 'reflect') and every s-th pixel kept from the first,
as the generator's ``downscale``. The arithmetic is float64, rounded once when the image is written.

An image's kernel depends only on ``--seed``, the scale and the image's name in the set (its path
under the input folder, as .png): the same seed remakes the same set, and adding images to the
folder leaves the others' kernels as they were. Written under OUT, all as PNG (lossless, 16 bits and alpha kept)::

    HR/NAME.png                      the ground truth, cropped to a multiple of s
    LR_randomkernel/X<s>/NAMEx<s>.png  its low-resolution image
    kernels/X<s>/NAMEx<s>.npy        the kernel that made it (float64, sums to 1)
    kernels/X<s>/NAMEx<s>_0.mat      the same as MATLAB variable ``Kernel``, named as the authors'
                                     run_ZSSR.py looks for it beside NAMEx<s>.png

``run --input OUT --scale s`` (or ``--input OUT/LR_randomkernel/X<s>``) pairs each LR image with
its ground truth and its kernel (``files.sources.benchmark_layout``). Subfolders keep their place.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .images import EXTENSIONS, Picture, load_image, save_image, write_atomic
from ..config import stays
from ..engine.kernels import random_kernel
from ..engine.resize import kernel_downscale, matlab_imresize_quantized

RANDOM_KERNEL_SET = "LR_randomkernel"  # the LR folder of a random-kernel set (beside LR_bicubic)
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by zssr-batch degrade --random-kernels".ljust(116)


def _crop(pic: Picture, h: int, w: int) -> Picture:
    return Picture(pic.color[:, :h, :w], None if pic.alpha is None else pic.alpha[:, :h, :w],
                   pic.bit_depth, pic.icc_profile)


def _crop_to_multiple(pic: Picture, s: int) -> Picture:
    h, w = pic.size[0] // s * s, pic.size[1] // s * s
    if h == 0 or w == 0:
        raise ValueError(f"image {pic.size[1]}x{pic.size[0]} is smaller than the scale {s}")
    return _crop(pic, h, w)


def degrade_picture(pic: Picture, scale: float) -> Picture:
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if float(scale).is_integer():
        pic = _crop_to_multiple(pic, int(scale))
    h, w = pic.size
    if stays((h, w), scale):  # a scale a hair over 1: a copy, not an input
        raise ValueError(f"x{scale:g} leaves this {w}x{h} image {w}x{h}: nothing would be shrunk")
    levels = 65535 if pic.bit_depth == 16 else 255

    def shrink(a):
        return None if a is None else matlab_imresize_quantized(
            torch.from_numpy(a).double(), 1.0 / scale, levels).float().numpy()

    return Picture(shrink(pic.color), shrink(pic.alpha), pic.bit_depth, pic.icc_profile)


def blur_picture(pic: Picture, kernel: np.ndarray, scale: int) -> Picture:
    """Correlate ``pic`` (its size a multiple of ``scale``) with ``kernel`` and keep every
    ``scale``-th pixel from the first: the generator's ``downscale``, which ``kernel_downscale``
    (the engine's son-making) computes the same way."""
    h, w = pic.size

    def shrink(a):
        if a is None:
            return None
        out = kernel_downscale(torch.from_numpy(a).double(), kernel, 1.0 / scale, (h // scale, w // scale))
        return out.clamp(0, 1).float().numpy()  # a kernel's negative taps can step outside [0, 1]

    return Picture(shrink(pic.color), shrink(pic.alpha), pic.bit_depth, pic.icc_profile)


def _images_under(src: Path, skip: Path | None = None) -> list[Path]:
    """Image files under the folder ``src``, sorted; hidden ones, and any under ``skip``, left out."""
    skip_real = os.path.realpath(skip) if skip else None
    return sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(src).parts)
                  and not (skip_real and os.path.realpath(p).startswith(skip_real + os.sep)))


Skip = Callable[[str], None]


def _read(path: Path, make: Callable[[Picture], Picture], skip: Skip | None) -> Picture | None:
    """``make`` of the image at ``path``; where it cannot be read or made (not an image, smaller than
    the scale), ``skip`` gets one line naming it and why and None comes back, so that one bad file
    costs only itself. Without ``skip`` the error is raised. Writing is not covered: a full disk or
    an output that cannot be written stops the whole set."""
    try:
        return make(load_image(path))
    except (OSError, ValueError) as e:
        if skip is None:
            raise
        said = str(e)
        skip(said if str(path) in said else f"{path}: {said}")
        return None


def degrade_path(src: str | Path, dst: str | Path, scale: float, suffix: str = "",
                 skip: Skip | None = None) -> list[tuple[Path, Path]]:
    """Degrade one file, or every image under a folder into the same layout; returns the (input,
    output) pairs written (``skip``: as ``_read``'s)."""
    if not (math.isfinite(scale) and scale > 1):  # 0.5 would enlarge, 1 copy: neither makes an LR input
        raise ValueError(f"degrade shrinks by --scale: it must be a finite number over 1, got {scale:g}")
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        pairs = [(p, (dst / p.relative_to(src)).with_name(p.stem + suffix + p.suffix)) for p in _images_under(src)]
    else:
        out = dst / (src.stem + suffix + src.suffix) if dst.is_dir() else dst
        pairs = [(src, out)]
    done = []
    for a, b in pairs:
        pic = _read(a, lambda p: degrade_picture(p, scale), skip)
        if pic is not None:
            save_image(b, pic)
            done.append((a, b))
    return done


def kernel_rng(seed: int, scale: int, rel: str) -> np.random.Generator:
    """The random stream of one image's kernel: from the seed, the scale and the image's name in
    the set (not its place in the listing, which other files would move)."""
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).digest()
    return np.random.default_rng([seed, scale, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def _kernel_files(kernel: np.ndarray) -> tuple[bytes, bytes]:
    """The kernel as .npy bytes and as .mat bytes (variable ``Kernel``), each written atomically."""
    from scipy.io import savemat

    npy, mat = io.BytesIO(), io.BytesIO()
    np.save(npy, kernel, allow_pickle=False)
    savemat(mat, {"Kernel": kernel})
    # The header's 116 bytes of free text hold the time of writing: a fixed text instead, so that
    # one seed makes the same bytes (a run's resume hashes its kernel files).
    return npy.getvalue(), MAT_HEADER + mat.getvalue()[len(MAT_HEADER):]


def _random_kernel_plan(src: Path, dst: Path) -> list[tuple[Path, str]]:
    """(file, its path under the input folder as NAME.png) for each input; refuses two inputs
    that would write one name (a.jpg and a.png) and an input that HR/ would overwrite."""
    root, files = (src, _images_under(src, skip=dst)) if src.is_dir() else (src.parent, [src])
    named: dict[str, Path] = {}
    for f in files:
        rel = f.relative_to(root).with_suffix(".png").as_posix()
        if rel in named:
            raise ValueError(f"{named[rel]} and {f} would both be {dst / 'HR' / rel}; rename one")
        if os.path.realpath(dst / "HR" / rel) == os.path.realpath(f):
            raise ValueError(f"{f}: the set's HR/ would overwrite it (cropped); choose an output outside {root}")
        named[rel] = f
    return [(f, rel) for rel, f in named.items()]


def degrade_random_kernels(src: str | Path, dst: str | Path, scale: float, seed: int = 0,
                           skip: Skip | None = None) -> list[tuple[Path, Path]]:
    """Make a random-kernel set under ``dst`` from the image ``src`` or every image under the folder
    ``src`` (see the module's docstring); returns the (input, LR image) pairs written (``skip``: as
    ``_read``'s; an image skipped writes none of its four files)."""
    if not float(scale).is_integer() or scale < 2:
        raise ValueError(f"--random-kernels needs a whole scale of at least 2 (its folders are X<s>), got {scale:g}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    s, src, dst = int(scale), Path(src), Path(dst)
    pairs = []
    for f, rel in _random_kernel_plan(src, dst):
        hr = _read(f, lambda p: _crop_to_multiple(p, s), skip)
        if hr is None:
            continue
        kernel = random_kernel(s, kernel_rng(seed, s, rel)).kernel
        stem = rel[: -len(".png")]
        lr_path = dst / RANDOM_KERNEL_SET / f"X{s}" / f"{stem}x{s}.png"
        npy, mat = _kernel_files(kernel)
        write_atomic(dst / "kernels" / f"X{s}" / f"{stem}x{s}.npy", npy)
        write_atomic(dst / "kernels" / f"X{s}" / f"{stem}x{s}_0.mat", mat)
        save_image(lr_path, blur_picture(hr, kernel, s))
        save_image(dst / "HR" / rel, hr)
        pairs.append((f, lr_path))
    return pairs
