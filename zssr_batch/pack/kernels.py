"""Each slot's own downscaling kernel (``SlotKernels``): images with different kernels, or none
(bicubic), share a pack, and each slot's sons are made with its own kernel.

The kernels live in one device buffer, written when a slot is filled, so the recorded step reads
them like any other per-slot state and one recording serves slots with any kernels. They are
zero-padded to one side per pack (the largest seen; a larger one grows the buffer and the step is
recorded again), which changes no son: ``pad_kernel`` keeps a kernel's centre tap where
``engine.resize.kernel_downscale`` centres it, so every tap meets the input pixel it met before,
and the added taps, zero, add nothing (tests/test_pack_kernels.py checks both).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Scale
from ..engine.kernels import shift_kernel
from ..engine.resize import _kernel_indices, imresize, output_size


def step_kernels(kernel: np.ndarray | None, steps: Sequence[Scale], device: torch.device) -> list[torch.Tensor | None]:
    """An image's kernel for each scale step, shifted for the step's scale, as ``engine.super_resolve``
    makes it (None each: bicubic). Checks, outputs and back-projection use these, unpadded, as alone."""
    return [None if kernel is None else torch.as_tensor(shift_kernel(kernel, sf), dtype=torch.float32, device=device)
            for sf in steps]


def pad_kernel(kernel: torch.Tensor, side: int) -> torch.Tensor:
    """``kernel`` (kh, kw) on a ``side x side`` grid of zeros, its tap (kh // 2, kw // 2) at (side // 2,
    side // 2): the tap ``kernel_downscale`` centres on each pixel, so every tap keeps its pixel."""
    kh, kw = kernel.shape
    top, left = side // 2 - kh // 2, side // 2 - kw // 2
    out = kernel.new_zeros(side, side)
    out[top:top + kh, left:left + kw] = kernel
    return out


def blur_downscale(x: torch.Tensor, taps: torch.Tensor, scale: Scale, out_shape: Sequence[int]) -> torch.Tensor:
    """``engine.resize.kernel_downscale`` of N images at once, each with its own kernel: ``x`` (N, C, h, w),
    ``taps`` (N, S, S). The same symmetric border and kept rows; the correlation as one grouped
    convolution (its sums may run in another order than the one-kernel convolution alone: float
    rounding)."""
    n, c, h, w = x.shape
    s = taps.shape[-1]
    rows, cols, ri, ci = _kernel_indices(h, w, s, s, scale[0], scale[1], int(out_shape[0]), int(out_shape[1]),
                                         x.device)
    padded = x.index_select(-2, rows).index_select(-1, cols)
    weight = taps.to(x.dtype).repeat_interleave(c, 0)[:, None]  # (N * C, 1, S, S): each channel its slot's kernel
    filtered = F.conv2d(padded.reshape(1, n * c, *padded.shape[-2:]), weight, groups=n * c)
    return filtered.index_select(-2, ri).index_select(-1, ci).reshape(n, c, len(ri), len(ci))


class SlotKernels:
    """Each slot's kernel of each scale step on the device, and which slots have one.

    A pack makes only the kinds of sons its slots have needed so far: bicubic only (its step is
    then what it was before kernels were per slot), kernels only, or both, each slot keeping its
    own (``blurred``). A new kind, or a kernel larger than the buffer, changes the step's shape:
    ``place`` then says it must be recorded again (once per pack at most for the kind, and as
    often as a larger kernel comes).
    """

    def __init__(self, k: int, steps: int, device: torch.device) -> None:
        self.k, self.steps, self.device = k, steps, device
        self.cubic = False  # some slot has made bicubic sons: the step makes them
        # (steps, K, S, S): each slot's kernel of each step, shifted and padded; None until a slot has one
        self.taps: torch.Tensor | None = None
        self.blurred: torch.Tensor | None = None  # (K,) bool: the slot's sons use its kernel (with taps)

    def place(self, slot: int, kernels: Sequence[torch.Tensor | None]) -> bool:
        """``slot``'s kernels from now on (``step_kernels``); True when the step must be recorded again."""
        changed = False
        if kernels[0] is None:
            changed, self.cubic = not self.cubic, True
        else:
            side = max(max(t.shape) for t in kernels if t is not None)
            if self.taps is None or side > self.taps.shape[-1]:
                self._grow(side)
                changed = True
        if self.taps is not None:
            self.taps[:, slot].zero_()
            for j, t in enumerate(kernels):
                if t is not None:
                    self.taps[j, slot] = pad_kernel(t, self.taps.shape[-1])
            assert self.blurred is not None
            self.blurred[slot] = kernels[0] is not None
        return changed

    def _grow(self, side: int) -> None:
        """The buffer to ``side`` (a first kernel, or a larger one), the kernels in it kept centred."""
        grown = torch.zeros(self.steps, self.k, side, side, device=self.device)
        if self.taps is None:
            self.blurred = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        else:
            old = self.taps.shape[-1]
            at = side // 2 - old // 2
            grown[..., at:at + old, at:at + old] = self.taps
        self.taps = grown

    def sons(self, father: torch.Tensor, step: int, sf: Scale,
             pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The sons of ``father`` (N, C, crop, crop; ``pick`` takes its rows from K-row buffers) at scale
        step ``step`` of scale ``sf``, each made with its slot's kernel or bicubic."""
        inv = (1 / sf[0], 1 / sf[1])
        if self.taps is None:
            return imresize(father, inv, kernel="cubic")
        blurred = blur_downscale(father, pick(self.taps[step]), inv, output_size(tuple(father.shape[-2:]), inv))
        if not self.cubic:
            return blurred
        assert self.blurred is not None
        return torch.where(pick(self.blurred).view(-1, 1, 1, 1), blurred, imresize(father, inv, kernel="cubic"))

    def keep(self, idx: torch.Tensor) -> None:
        """Only the positions ``idx`` (a draining pack compacts)."""
        self.k = len(idx)
        if self.taps is not None and self.blurred is not None:
            self.taps, self.blurred = self.taps.index_select(1, idx), self.blurred.index_select(0, idx)
