"""Explicit downscaling kernels for non-bicubic degradations (numpy, scipy).

A kernel is a 2-D array read from ``.npy``, or the ``Kernel`` variable of a
MATLAB ``.mat`` file as the authors' code reads it. Like their
``preprocess_kernels``, it is shifted so that its centre of mass sits where
bicubic downscaling puts the centre of each ``s x s`` block; then the input,
upscaled with plain bicubic, lines up with the ground truth.
"""

from __future__ import annotations

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
