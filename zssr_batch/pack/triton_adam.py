"""The pack's Adam step as one Triton kernel: each parameter row read and written once.

Imported only when a pack runs its convolutions with ``conv="triton"`` (``nets.PackedAdam``).
``PackedAdam`` in whole-pack torch operations passes over the (K, P) tensors about a dozen
times a step, each pass a kernel (a few percent of a step: docs/BENCHMARKS.md, "Why the pack's
defaults are what they are");
here one pass reads the gradient, the moments and the weights and writes the three back.
The arithmetic is torch's, operation by operation, with correctly rounded square roots and
divisions (``sqrt_rn``, ``div_rn``) as torch computes them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_conv import fits_int32

BLOCK = 1024  # parameters per program


@triton.jit
def _adam_rows(p_ptr, g_ptr, m_ptr, v_ptr, c_ptr, P, eps, BLOCK: tl.constexpr):
    blk = tl.program_id(0)
    row = tl.program_id(1)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    inside = offs < P
    at = row * P + offs
    # the row's coefficients: moment-1 weight, moment-2 decay and gain, step size, bias correction
    w1 = tl.load(c_ptr + row * 5)
    d2 = tl.load(c_ptr + row * 5 + 1)
    a2 = tl.load(c_ptr + row * 5 + 2)
    step = tl.load(c_ptr + row * 5 + 3)
    bc2 = tl.load(c_ptr + row * 5 + 4)
    g = tl.load(g_ptr + at, mask=inside, other=0.0)
    m = tl.load(m_ptr + at, mask=inside, other=0.0)
    v = tl.load(v_ptr + at, mask=inside, other=0.0)
    p = tl.load(p_ptr + at, mask=inside, other=0.0)
    m = m + w1 * (g - m)  # m.lerp_(g, w1)
    v = v * d2 + (g * a2) * g  # v.mul_(d2).addcmul_(g * a2, g)
    denom = tl.div_rn(tl.sqrt_rn(v), bc2) + eps
    p = p - tl.div_rn(m, denom) * step
    tl.store(m_ptr + at, m, mask=inside)
    tl.store(v_ptr + at, v, mask=inside)
    tl.store(p_ptr + at, p, mask=inside)


def adam_rows(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, coef: torch.Tensor,
              eps: float) -> None:
    """Update ``p``, ``m``, ``v`` (K, P), contiguous float32, in place by gradient ``g``; ``coef`` (K, 5)
    float32 holds each row's (moment-1 weight, moment-2 decay, moment-2 gain, step size, sqrt of the
    second bias correction): 0, 1, 0, 0 and anything positive leave a row as it is."""
    k, n = p.shape
    fits_int32(p)
    _adam_rows[(triton.cdiv(n, BLOCK), k)](p, g, m, v, coef, n, eps, BLOCK=BLOCK)
