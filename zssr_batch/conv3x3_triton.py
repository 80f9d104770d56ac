"""A grouped 3x3 convolution (stride 1, zero padding 1) as one implicit-GEMM Triton kernel.

Imported only when a pack runs its convolutions with ``conv="triton"`` (``pack_conv``);
GPU builds of torch ship Triton. Group g is a GEMM of (H*W pixels) x (9 taps * Cin) by
(9 * Cin) x Cout: each program computes a BM-pixel by BN-channel tile of one group,
loading its input tiles shifted by each tap straight from the activation (no im2col
copy) and accumulating in float32 on tensor cores. Strides are passed in, so any
memory layout works; channels-last (what the pack uses on a GPU) makes the loads
contiguous along channels. The input gradient is the same kernel over the output
gradient, with the weights' in/out swapped (strides) and their taps flipped (``FLIP``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _conv3x3(x_ptr, w_ptr, y_ptr, H, W, CIN, COUT,
             sxg, sxc, sxh, sxw,  # input: group, channel, row, column strides
             swg, swo, swi, swh, sww,  # weights: group, out channel, in channel, tap row, tap column
             syg, syc, syh, syw,  # output
             FLIP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    pm = pid_m * BM + tl.arange(0, BM)
    pn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    py = pm // W
    px = pm % W
    in_m = pm < H * W
    in_n = pn < COUT
    x_g = x_ptr + g * sxg
    w_g = w_ptr + g * swg
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for t in tl.static_range(9):
        dy = t // 3
        dx = t % 3
        wy = dy + FLIP * (2 - 2 * dy)  # the input gradient runs the taps mirrored
        wx = dx + FLIP * (2 - 2 * dx)
        iy = py + (dy - 1)
        ix = px + (dx - 1)
        ok = in_m & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        for c0 in range(0, CIN, BK):
            ci = c0 + rk
            in_k = ci < CIN
            a = tl.load(x_g + iy[:, None] * sxh + ix[:, None] * sxw + ci[None, :] * sxc,
                        mask=ok[:, None] & in_k[None, :], other=0.0)
            b = tl.load(w_g + pn[None, :] * swo + ci[:, None] * swi + wy * swh + wx * sww,
                        mask=in_k[:, None] & in_n[None, :], other=0.0)
            acc += tl.dot(a, b)
    out = y_ptr + g * syg + py[:, None] * syh + px[:, None] * syw + pn[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=in_m[:, None] & in_n[None, :])


def _block(c: int) -> int:
    """A tile side for ``c`` channels: a power of two from 16 (``tl.dot``'s least) to 64."""
    return max(16, min(64, triton.next_power_of_2(c)))


def conv3x3(x: torch.Tensor, w: torch.Tensor, groups: int, flip: bool = False) -> torch.Tensor:
    """``x`` (1, G*Cin, H, W), ``w`` (G, Cout, Cin, 3, 3) (any strides) -> (1, G*Cout, H, W), in ``x``'s layout.

    ``flip`` mirrors the taps (with ``w`` given as its in/out transpose, the input gradient).
    """
    _, _, h, wd = x.shape
    g, cout, cin = w.shape[:3]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    y = torch.empty((1, g * cout, h, wd), dtype=x.dtype, device=x.device, memory_format=fmt)
    sx, sy, sw = x.stride(), y.stride(), w.stride()
    bm, bn, bk = 128, _block(cout), _block(cin)
    grid = (triton.cdiv(h * wd, bm), triton.cdiv(cout, bn), g)
    _conv3x3[grid](x, w, y, h, wd, cin, cout,
                   cin * sx[1], sx[1], sx[2], sx[3],
                   *sw,
                   cout * sy[1], sy[1], sy[2], sy[3],
                   FLIP=int(flip), BM=bm, BN=bn, BK=bk, num_warps=4, num_stages=3)
    return y
