"""PSNR and SSIM as the super-resolution literature scores them.

Images are compared as 8-bit values (0..255, float64), ``shave`` pixels cut
from every border. On Y, Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in
[0, 1]; not rounded, as BasicSR); a one-channel image is its own Y, as the
MATLAB scripts of Kim et al. and BasicSR treat grayscale. SSIM uses an 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population covariances, and
averages over the 'valid' window positions and then over channels — the same
numbers as scikit-image's ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8_levels(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) float64 on the 0..255 integer grid."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = np.floor(np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5)
    return np.transpose(a, (1, 2, 0))


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) on 0..255 -> (H, W, 1) luma in [16, 235]; one channel passes through."""
    if img.shape[-1] == 1:
        return img
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0)[..., None]


def shave(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return torch.from_numpy(g / g.sum())


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'valid' 2-D Gaussian filtering of (N, 1, H, W), as two 1-D passes (the window is separable)."""
    return F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two (H, W, C) images, averaged over channels."""
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {a.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    g = _gaussian_1d()
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(a, (2, 0, 1)), dtype=np.float64))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(np.transpose(b, (2, 0, 1)), dtype=np.float64))[:, None]
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    vx = _filter_valid(x * x, g) - mx**2
    vy = _filter_valid(y * y, g) - my**2
    cxy = _filter_valid(x * y, g) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def align(sr: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both to their common top-left region (ground truth is cropped to ``LR size * s``)."""
    h, w = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])
    sr, gt = sr[:h, :w], gt[:h, :w]
    if sr.shape[-1] != gt.shape[-1]:  # one gray, one colour: compare as colour
        sr, gt = (np.repeat(t, 3, axis=-1) if t.shape[-1] == 1 else t for t in (sr, gt))
    return sr, gt


def score(sr: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, border: int) -> dict[str, float]:
    """psnr_rgb, ssim_rgb, psnr_y, ssim_y of ``sr`` against ``gt`` (both (C, H, W) in [0, 1])."""
    a, b = align(to_uint8_levels(sr), to_uint8_levels(gt))
    a, b = shave(a, border), shave(b, border)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    return {"psnr_rgb": psnr(a, b), "ssim_rgb": ssim(a, b), "psnr_y": psnr(ya, yb), "ssim_y": ssim(ya, yb)}
