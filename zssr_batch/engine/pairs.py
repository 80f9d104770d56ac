"""Training pairs made from the image itself, as the authors' ``random_augment`` makes them.

father: a crop of the image (or of an earlier, larger output in gradual mode),
        with probability ``p_as_is`` as it is, ``p_no_interp`` rotated by a right
        angle and maybe mirrored, otherwise warped by a random affine map (scale,
        x/y scale difference, any angle, shear, mirror) with bicubic sampling.
son:    the father shrunk by the scale factor (bicubic, or the given kernel),
        plus optional Gaussian noise; the network sees it upscaled back to the
        father's size and must restore the father.

All random draws come from one CPU ``torch.Generator`` per image, so a seed
gives the same pairs on every device and images never share a stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Scale
from .resize import imresize, output_size


@dataclass(frozen=True)
class Augment:
    """The father-sampling knobs of FitConfig (see there for their meaning)."""

    crop: int
    p_as_is: float
    p_no_interp: float
    min_scale: float
    max_scale: float  # 0 = the authors' rule: the base scale of the newest source
    scale_diff_sigma: float
    shear_sigma: float
    rotation: str  # 'any' | 'right' | 'none'


class Draw:
    """Scalar random draws (uniform [0, 1), normal, integer) from a CPU generator, 64 at a time.

    A pack makes K fathers per step on the host; one generator call per scalar
    was most of that time. Blocks keep the stream a pure function of the seed
    and of the sequence of calls, which the single and packed fits share.
    """

    BLOCK = 64

    def __init__(self, gen: torch.Generator) -> None:
        self.gen = gen
        self._uniform: list[float] = []
        self._normal: list[float] = []

    def rand(self) -> float:
        if not self._uniform:
            self._uniform = torch.rand(self.BLOCK, generator=self.gen, dtype=torch.float64).tolist()[::-1]
        return self._uniform.pop()

    def randn(self) -> float:
        if not self._normal:
            self._normal = torch.randn(self.BLOCK, generator=self.gen, dtype=torch.float64).tolist()[::-1]
        return self._normal.pop()

    def randint(self, n: int) -> int:
        return min(int(self.rand() * n), n - 1)


def father_transform(src_hw: tuple[int, int], crop: int, base_scale: float, scale: float, mode: str,
                     aug: Augment, draw: Draw) -> np.ndarray:
    """The 3x3 matrix mapping source pixel (x, y) to crop pixel, composed as the authors compose it.

    Quirk kept on purpose: the crop offset is drawn in ``[0, scale * size - crop]``
    around an origin that does not follow the scaling, so shrunken fathers can
    hold empty (zero) margins, as theirs do.
    """
    h, w = src_hw
    to_center = np.array([[1, 0, -w / 2.0], [0, 1, -h / 2.0], [0, 0, 1]])
    from_center = np.array([[1, 0, w / 2.0], [0, 1, h / 2.0], [0, 0, 1]])
    if mode != "affine":  # integer shifts keep the crop free of interpolation
        to_center, from_center = np.round(to_center), np.round(from_center)
    if mode == "affine":
        scale = scale / base_scale
        diff = draw.randn() * aug.scale_diff_sigma
    else:
        scale, diff = 1.0, 0.0
    reflect = 1.0 if (mode == "as_is" or aug.rotation == "none") else float(np.sign(draw.randn()) or 1.0)
    scale_mat = np.array([[reflect * (scale + diff / 2), 0, 0], [0, scale - diff / 2, 0], [0, 0, 1]])
    shift_x = draw.rand() * min(max(scale * w - crop, 0.0), 9999.0)
    shift_y = draw.rand() * min(max(scale * h - crop, 0.0), 9999.0)
    shift = np.array([[1, 0, -shift_x], [0, 1, -shift_y], [0, 0, 1]])
    if mode != "affine":
        shift = np.round(shift)
    if aug.rotation == "none" or mode == "as_is":
        theta = 0.0
    elif mode == "affine" and aug.rotation == "any":
        theta = draw.rand() * 2 * math.pi
    else:
        theta = draw.randint(4) * math.pi / 2
    rot = np.array([[math.cos(theta), math.sin(theta), 0], [-math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    if mode == "affine":
        shear_x, shear_y = draw.randn() * aug.shear_sigma, draw.randn() * aug.shear_sigma
    else:
        shear_x = shear_y = 0.0
    shear = np.array([[1, shear_x, 0], [shear_y, 1, 0], [0, 0, 1]])
    return from_center @ shift @ shear @ rot @ scale_mat @ to_center


def warp(image: torch.Tensor, matrix: np.ndarray, crop: int, exact: bool) -> torch.Tensor:
    """Sample a ``crop x crop`` window: crop pixel p takes source ``inv(matrix) @ p``.

    Like OpenCV's ``warpPerspective(..., INTER_CUBIC)`` with a zero border: bicubic
    (a = -0.75) sampling; ``exact`` (integer maps) gathers pixels without interpolation.
    """
    c, h, w = image.shape
    inv = np.linalg.inv(matrix)
    ys, xs = np.meshgrid(np.arange(crop, dtype=np.float64), np.arange(crop, dtype=np.float64), indexing="ij")
    pts = inv @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    sx, sy = pts[0] / pts[2], pts[1] / pts[2]
    if exact:
        ix, iy = np.round(sx).astype(np.int64), np.round(sy).astype(np.int64)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        flat = torch.as_tensor(np.where(inside, iy * w + ix, 0), device=image.device)
        mask = torch.as_tensor(inside, device=image.device, dtype=image.dtype)
        out = image.reshape(c, -1).index_select(1, flat) * mask
        return out.reshape(c, crop, crop)
    grid = np.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], axis=-1).reshape(1, crop, crop, 2)
    g = torch.as_tensor(grid, dtype=image.dtype, device=image.device)
    out = F.grid_sample(image[None], g, mode="bicubic", padding_mode="zeros", align_corners=False)
    return out[0].clamp(0, 1)


def draw_father(sizes: Sequence[tuple[int, int]], base_scales: Sequence[Scale], aug: Augment,
                draw: Draw) -> tuple[int, np.ndarray, int, bool]:
    """The random choices of one father: (source index, 3x3 matrix, crop side, exact?).

    ``sizes`` are the (h, w) of the current sources (the image, then gradual outputs).
    """
    r = draw.rand()
    if r < aug.p_as_is:
        mode = "as_is"
    elif r < aug.p_as_is + aug.p_no_interp:
        mode = "no_interp"
    else:
        mode = "affine"
    max_scale = aug.max_scale or min(base_scales[len(sizes) - 1])
    scale = 1.0 if mode == "as_is" else draw.rand() * (max_scale - aug.min_scale) + aug.min_scale
    # the smallest source that is at least as large as the wanted scale
    index = next((i for i, b in enumerate(base_scales[: len(sizes)]) if min(b) > scale - 1e-6), len(sizes) - 1)
    h, w = sizes[index]
    crop = min(aug.crop, h, w)  # a crop larger than the image would only add empty borders
    matrix = father_transform((h, w), crop, min(base_scales[index]), scale, mode, aug, draw)
    return index, matrix, crop, mode != "affine"


def sample_father(sources: Sequence[torch.Tensor], base_scales: Sequence[Scale], aug: Augment,
                  draw: Draw) -> torch.Tensor:
    """One father ``(C, crop, crop)`` from the current sources (the image, then gradual outputs)."""
    index, matrix, crop, exact = draw_father([tuple(s.shape[-2:]) for s in sources], base_scales, aug, draw)
    return warp(sources[index], matrix, crop, exact)


def warp_batch(sources: torch.Tensor, inverses: torch.Tensor, exact: torch.Tensor, crop: int) -> torch.Tensor:
    """``warp`` for K images at once, all on the device (no host copies: it can sit in a CUDA graph).

    ``sources``: (N, C, S, S), image n in its top-left corner and zeros around it,
    which is what ``warp``'s zero border reads there too; ``inverses``: (N, 3, 3)
    float64, crop pixel -> source pixel; ``exact``: (N,) bool, gather instead of
    bicubic sampling.
    """
    n, c, sh, sw = sources.shape
    ys, xs = torch.meshgrid(torch.arange(crop, dtype=torch.float64, device=sources.device),
                            torch.arange(crop, dtype=torch.float64, device=sources.device), indexing="ij")
    pts = inverses @ torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)])  # (N, 3, P)
    sx, sy = pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]
    grid = torch.stack([(2 * sx + 1) / sw - 1, (2 * sy + 1) / sh - 1], dim=-1).reshape(n, crop, crop, 2)
    smooth = F.grid_sample(sources, grid.to(sources.dtype), mode="bicubic", padding_mode="zeros",
                           align_corners=False).clamp(0, 1)
    ix, iy = sx.round().long(), sy.round().long()
    inside = (ix >= 0) & (ix < sw) & (iy >= 0) & (iy < sh)
    flat = torch.where(inside, iy * sw + ix, 0)[:, None].expand(n, c, -1)
    gathered = sources.reshape(n, c, -1).gather(2, flat) * inside[:, None].to(sources.dtype)
    return torch.where(exact.view(n, 1, 1, 1), gathered.reshape(n, c, crop, crop), smooth)


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait: on a GPU through pinned memory,
    asynchronously. (A copy from pageable memory first waits for all the work queued before it.)"""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def son_shape(shape: Sequence[int], sf: Scale) -> tuple[int, ...]:
    """The shape of the son of a father of ``shape`` (..., h, w), shrunk by ``sf``."""
    return (*shape[:-2], *output_size(tuple(shape[-2:]), (1.0 / sf[0], 1.0 / sf[1])))


def son_noise(shape: Sequence[int], noise_std: float, gen: torch.Generator) -> torch.Tensor | None:
    """The noise ``make_son`` adds to a son of ``shape``, drawn on the host from the image's stream
    (None without noise). Drawn apart so that a son made later still gets the draws of its turn."""
    if noise_std <= 0:
        return None
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * noise_std


def noisy_son(father: torch.Tensor, sf: Scale, kernel: torch.Tensor | None, noise: torch.Tensor | None) -> torch.Tensor:
    """Shrink a father by ``sf`` (with the kernel if given) and add ``noise`` (``son_noise``); clipped to [0, 1]."""
    son = imresize(father, (1.0 / sf[0], 1.0 / sf[1]), kernel=kernel if kernel is not None else "cubic")
    if noise is not None:
        son = son + upload(noise.to(son.dtype), son.device)
    return son.clamp(0, 1)


def make_son(father: torch.Tensor, sf: Scale, kernel: torch.Tensor | None, noise_std: float,
             gen: torch.Generator) -> torch.Tensor:
    """Shrink a father by ``sf`` (with the kernel if given) and add noise; values clipped to [0, 1]."""
    return noisy_son(father, sf, kernel, son_noise(son_shape(father.shape, sf), noise_std, gen))
