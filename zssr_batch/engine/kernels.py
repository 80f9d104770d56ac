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

import numpy as np


def load_kernel(path: str | Path) -> np.ndarray:
    p = Path(path)
    if p.suffix.lower() == ".npy":
        kernel = np.load(p, allow_pickle=False)
    elif p.suffix.lower() == ".mat":
        from scipy.io import loadmat

        data = loadmat(p)
        if "Kernel" not in data:
            raise ValueError(f"{p}: no variable named 'Kernel' in the .mat file")
        kernel = data["Kernel"]
    else:
        raise ValueError(f"{p}: a kernel must be a .npy or .mat file")
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or min(kernel.shape) < 1 or not np.isfinite(kernel).all() or kernel.sum() <= 0:
        raise ValueError(f"{p}: a kernel must be a finite 2-D array with a positive sum, got shape {kernel.shape}")
    return kernel / kernel.sum()


def shift_kernel(kernel: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """The authors' ``kernel_shift`` (utils.py): move the centre of mass to ``shape / 2 + (s - shape % 2) / 2``."""
    from scipy import ndimage

    shape = np.array(kernel.shape, dtype=np.float64)
    current = np.array(ndimage.center_of_mass(kernel))
    wanted = shape / 2 + 0.5 * (np.array(scale, dtype=np.float64) - (shape % 2))
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
