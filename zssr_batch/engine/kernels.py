"""Explicit downscaling kernels for non-bicubic degradations (numpy, scipy).

A kernel is a 2-D array read from ``.npy``, or the ``Kernel`` variable of a
MATLAB ``.mat`` file as the authors' code reads it. Like their
``preprocess_kernels``, it is shifted so that its centre of mass sits where
bicubic downscaling puts the centre of each ``s x s`` block; then the input,
upscaled with plain bicubic, lines up with the ground truth.

``random_kernel`` draws the blind-SR kernels of the authors' BlindSR_dataset_generator
(github.com/assafshocher/BlindSR_dataset_generator, ``gen_kernel`` with its default settings;
KernelGAN's README points to it for making DIV2KRK-style sets): an anisotropic Gaussian with
random variances and angle, times multiplicative noise, then shifted as above. (DIV2KRK itself
was drawn with other settings: 11x11 at x2, variances 0.6-5, noise 0.25; KernelGAN issue #59.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def load_kernel(path: str | Path) -> np.ndarray:
    p = Path(path)
    if p.suffix.lower() == ".npy":
        try:
            kernel = np.load(p, allow_pickle=False)
        except ValueError as e:  # not an array file: numpy's advice to unpickle it is not for us
            raise ValueError(f"{p}: not a .npy array (it would need unpickling, which is not done)"
                             if "pickle" in str(e) else f"{p}: not a .npy array ({e})") from None
    elif p.suffix.lower() == ".mat":
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError

        try:
            data = loadmat(p)
        except (ValueError, TypeError, NotImplementedError, MatReadError) as e:  # a file scipy cannot read
            raise ValueError(f"{p}: not a .mat file scipy can read ({e})") from None
        if "Kernel" not in data:
            raise ValueError(f"{p}: no variable named 'Kernel' in the .mat file")
        kernel = data["Kernel"]
    else:
        raise ValueError(f"{p}: a kernel must be a .npy or .mat file")
    try:
        kernel = np.asarray(kernel, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError(f"{p}: a kernel must be an array of numbers, got {kernel.dtype}") from None
    if kernel.ndim != 2 or min(kernel.shape) < 1:
        raise ValueError(f"{p}: a kernel must be a 2-D array, got shape {kernel.shape}")
    if not np.isfinite(kernel).all():
        raise ValueError(f"{p}: a kernel must be finite, it holds NaN or infinity")
    if kernel.sum() <= 0:
        raise ValueError(f"{p}: a kernel must have a positive sum, got {kernel.sum():g}")
    return kernel / kernel.sum()


def shift_kernel(kernel: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """The authors' ``kernel_shift`` (utils.py): move the centre of mass to ``shape // 2 + (s - shape % 2) / 2``.

    Floor division, as their Python 2 code divided integer shapes (and KernelGAN writes ``//``):
    so placed, the bicubic kernel downscales as MATLAB's imresize does. With ``shape / 2`` an odd
    kernel sat half an HR pixel off, and a fit given the bicubic kernel as a file lost ~6 dB against
    the same fit assuming bicubic (docs/BENCHMARKS.md, "Blind SR")."""
    from scipy import ndimage

    shape = np.array(kernel.shape, dtype=np.float64)
    current = np.array(ndimage.center_of_mass(kernel))
    wanted = np.floor(shape / 2) + 0.5 * (np.array(scale, dtype=np.float64) - (shape % 2))
    shift = wanted - current
    pad = int(np.ceil(np.max(np.abs(shift)))) + 1
    return ndimage.shift(np.pad(kernel, pad, mode="constant"), shift)


# The generator's defaults (its first cell): each variance uniform in [0.175 s, 2.5 s] pixels^2
# for scale s, multiplicative noise uniform in +-0.4.
MIN_VARIANCE, MAX_VARIANCE, KERNEL_NOISE = 0.175, 2.5, 0.4


@dataclass(frozen=True)
class RandomKernel:
    kernel: np.ndarray  # (n, n) float64, sums to 1, centre of mass where shift_kernel puts it
    variances: tuple[float, float]  # the Gaussian's covariance eigenvalues (pixels^2), before the noise
    angle: float  # radians in [0, pi): the first eigenvector's angle from the x (column) axis


def random_kernel_size(scale: int) -> int:
    """The side of the grid the Gaussian is drawn on: the generator's 21 at x4, and at other scales
    the same room for the widest Gaussian it draws (half-width / largest sigma = sqrt(10), about 3.2):
    half-width ceil(5 sqrt(s)), so 17 at x2, 19 at x3, 21 at x4, 31 at x8."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    return 2 * math.ceil(5 * math.sqrt(scale)) + 1


def random_kernel(scale: int, rng: np.random.Generator) -> RandomKernel:
    """One kernel of the authors' generator at integer ``scale``, drawn from ``rng`` in its order:
    the two variances, the angle, then the noise of each tap.

    The Gaussian's mean starts where the generator puts it (``n // 2 + (s - n % 2) / 2``, half a
    pixel short of the shift's target on an odd grid, and the noise moves the centre of mass
    further); ``shift_kernel`` then puts the centre of mass where the engine expects it. Unlike the
    generator's own shift, ours pads the grid first (by the shift rounded up, plus one), so no weight
    falls off its edge: the kernel comes out larger than ``random_kernel_size`` (by 4 taps in 300
    draws at each scale: 21x21 at x2).
    Both shift with scipy's cubic spline, so a sharp kernel can get small negative taps (down to
    -6 % of its peak over 300 draws at x2).
    """
    n = random_kernel_size(scale)
    lo, hi = MIN_VARIANCE * scale, MAX_VARIANCE * scale
    variances = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    angle = float(rng.uniform(0.0, math.pi))
    noise = rng.uniform(-KERNEL_NOISE, KERNEL_NOISE, (n, n))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    inv = np.linalg.inv(rot @ np.diag(variances) @ rot.T)
    mean = n // 2 + 0.5 * (scale - n % 2)
    y, x = np.mgrid[0:n, 0:n] - mean  # the generator's (x, y) is (column, row)
    quad = inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y
    shifted = shift_kernel(np.exp(-0.5 * quad) * (1 + noise), (scale, scale))
    return RandomKernel(shifted / shifted.sum(), variances, angle)


def bicubic_kernel(scale: int) -> np.ndarray:
    """MATLAB's bicubic downscaling by integer ``scale`` as one 2-D kernel: the cubic (a = -0.5)
    stretched by ``scale`` (antialiasing), sampled at the ``4 s`` HR pixels one LR pixel sees, outer
    product with itself, padded to an odd ``4 s + 1`` side (a zero last row and column). Its first
    ``4 s`` taps correlated at stride ``s`` with ``3 s / 2`` pixels of padding (even ``s``) are ``imresize``
    by ``1 / s`` away from the borders; at x2 they are the table KernelGAN's ``loss.py`` writes out,
    and through ``shift_kernel`` they downscale as ``imresize`` does."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"a bicubic kernel needs an integer scale, got {scale}")
    from .resize import _cubic

    s = int(scale)
    offsets = np.arange(4 * s) - (4 * s - 1) / 2  # HR pixel centres around the LR pixel's centre
    taps = _cubic(offsets / s) / s
    return np.pad(np.outer(taps, taps), ((0, 1), (0, 1)))


def analytic_kernel(k2: np.ndarray) -> np.ndarray:
    """The x4 kernel of downscaling twice by 2 with ``k2`` (KernelGAN's ``analytic_kernel``, its
    paper's appendix): ``k2`` convolved with itself dilated by 2 (the second pass runs on the
    coarser grid), ``3n - 2`` taps cropped by ``n // 2`` a side as theirs is, summing to 1."""
    from scipy.signal import convolve2d

    n = k2.shape[0]
    if k2.ndim != 2 or k2.shape[1] != n:
        raise ValueError(f"analytic_kernel needs a square 2-D kernel, got shape {k2.shape}")
    dilated = np.zeros((2 * n - 1, 2 * n - 1))
    dilated[::2, ::2] = k2
    big = convolve2d(dilated, k2)  # (3n - 2) square: the authors' loop of shifted copies
    c = n // 2
    big = big[c:-c, c:-c] if c else big
    return big / big.sum()


def kernel_moments(kernel: np.ndarray) -> tuple[float, float]:
    """(width, anisotropy) of a kernel from the second central moments of its positive part, in HR
    pixels: width is the mean of the two principal standard deviations, anisotropy the larger over
    the smaller. The positive part, because a bicubic kernel's negative lobes cancel its second
    moment (0 at x2): its main lobe's width is what compares with a Gaussian's sigma."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0, None)
    k = k / k.sum()
    y, x = np.mgrid[0:k.shape[0], 0:k.shape[1]]
    cy, cx = (k * y).sum(), (k * x).sum()
    dy, dx = y - cy, x - cx
    cov = np.array([[(k * dy * dy).sum(), (k * dy * dx).sum()], [(k * dy * dx).sum(), (k * dx * dx).sum()]])
    lo, hi = np.sqrt(np.clip(np.linalg.eigvalsh(cov), 1e-12, None))
    return float((lo + hi) / 2), float(hi / lo)


def centred(kernel: np.ndarray, side: int) -> np.ndarray:
    """``kernel`` on an odd ``side x side`` grid with its centre of mass on the middle tap (cubic
    spline shift, as ``shift_kernel``), summing to 1: two kernels so placed compare tap by tap."""
    from scipy import ndimage

    k = np.asarray(kernel, dtype=np.float64)
    big = max(side, *k.shape) + 8  # room for the shift before the crop
    canvas = np.zeros((big, big))
    top, left = (big - k.shape[0]) // 2, (big - k.shape[1]) // 2
    canvas[top:top + k.shape[0], left:left + k.shape[1]] = k
    shift = (big - 1) / 2 - np.array(ndimage.center_of_mass(canvas))
    moved = ndimage.shift(canvas, shift)
    c = (big - side) // 2
    out = moved[c:c + side, c:c + side]
    return out / out.sum()


def kernel_error(kernel: np.ndarray, true: np.ndarray) -> float:
    """How far ``kernel`` is from the ``true`` one: the L2 norm of their difference over the true
    kernel's, once both are centred on one grid (``centred``; a shift of the whole kernel only moves
    the image, and the engine's ``shift_kernel`` removes it anyway). 0 is exact; a kernel of the
    right shape but the wrong width scores well above 0.3."""
    side = 2 * (max(*kernel.shape, *true.shape) // 2) + 1
    a, b = centred(kernel, side), centred(true, side)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def remade_psnr(lr: torch.Tensor, gt: torch.Tensor, kernel: np.ndarray | None,
                scale: tuple[float, float]) -> float:
    """PSNR-Y (dB, 8-bit) of the input ``lr`` (C, h, w) made again from its ground truth ``gt`` with
    ``kernel`` (None: bicubic), as the fit downscales (``shift_kernel`` for ``scale``, then
    ``kernel_downscale``), against ``lr`` itself: how well the kernel explains the input. Borders
    as wide as the kernel's reach are left out (the set's padding is not the fit's)."""
    import torch

    from .metrics import psnr, rgb_to_y, shave, to_uint8_levels
    from .resize import imresize

    h, w = lr.shape[-2:]
    sv, sh = scale
    gt = gt[..., :round(h * sv), :round(w * sh)].double()
    if kernel is None:
        remade, reach = imresize(gt, (1 / sv, 1 / sh), (h, w)), 2 * max(sv, sh)
    else:
        shifted = torch.as_tensor(shift_kernel(kernel, scale))
        remade, reach = imresize(gt, (1 / sv, 1 / sh), (h, w), kernel=shifted), max(shifted.shape) / 2
    border = max(2, math.ceil(reach / min(sv, sh)))
    a, b = (rgb_to_y(shave(to_uint8_levels(t), border)) for t in (remade, lr))
    return psnr(a, b)
