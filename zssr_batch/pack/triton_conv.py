"""A grouped 3x3 convolution (stride 1, zero padding 1) as one implicit-GEMM Triton kernel.

Imported only when a pack runs its convolutions with ``conv="triton"`` (``pack.conv``);
GPU builds of torch ship Triton. Group g is a GEMM of (H*W pixels) x (9 taps * Cin) by
(9 * Cin) x Cout: each program computes a BM-pixel by BN-channel tile of one group,
loading its input tiles shifted by each tap straight from the activation (no im2col
copy) and accumulating in float32 on tensor cores. Strides are passed in, so any
memory layout works; channels-last (what the pack uses on a GPU) makes the loads
contiguous along channels. The input gradient is the same kernel over the output
gradient, with the weights' in/out swapped (strides) and their taps flipped (``FLIP``).
The weight gradient (``weight_grad``) is a second kernel: per group and tap, the output
gradient times the input shifted by the tap, summed over pixels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _conv3x3(x_ptr, w_ptr, y_ptr, m_ptr, H, W, CIN, COUT,
             sxg, sxc, sxh, sxw,  # input: group, channel, row, column strides
             swg, swo, swi, swh, sww,  # weights: group, out channel, in channel, tap row, tap column
             syg, syc, syh, syw,  # output
             smg, smc, smh, smw,  # the mask source (MASK)
             FLIP: tl.constexpr, RELU: tl.constexpr, MASK: tl.constexpr,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, CACHE: tl.constexpr):
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
    # One loop over (tap, channel block), not an unrolled loop of taps: a loop Triton can
    # pipeline, loading the next tap's tiles while the tensor cores work on this one.
    n_ci = tl.cdiv(CIN, BK)
    for kk in range(0, 9 * n_ci):
        t = kk // n_ci
        dy = t // 3
        dx = t % 3
        wy = dy + FLIP * (2 - 2 * dy)  # the input gradient runs the taps mirrored
        wx = dx + FLIP * (2 - 2 * dx)
        iy = py + (dy - 1)
        ix = px + (dx - 1)
        ok = in_m & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        ci = (kk % n_ci) * BK + rk
        in_k = ci < CIN
        a = tl.load(x_g + iy[:, None] * sxh + ix[:, None] * sxw + ci[None, :] * sxc,
                    mask=ok[:, None] & in_k[None, :], other=0.0, cache_modifier=CACHE)
        b = tl.load(w_g + pn[None, :] * swo + ci[:, None] * swi + wy * swh + wx * sww,
                    mask=in_k[:, None] & in_n[None, :], other=0.0, cache_modifier=CACHE)
        acc += tl.dot(a, b)
    if RELU:  # the layer's ReLU, applied as the tile is stored
        acc = tl.maximum(acc, 0.0)
    if MASK:  # an input gradient through the ReLU whose output ``m`` is: zero where it was
        m = tl.load(m_ptr + g * smg + py[:, None] * smh + px[:, None] * smw + pn[None, :] * smc,
                    mask=in_m[:, None] & in_n[None, :], other=0.0)
        acc = tl.where(m > 0, acc, 0.0)
    out = y_ptr + g * syg + py[:, None] * syh + px[:, None] * syw + pn[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=in_m[:, None] & in_n[None, :])


@triton.jit
def _wgrad3x3(x_ptr, gy_ptr, part_ptr, H, W, CIN, COUT, CHUNK,
              sxg, sxc, sxh, sxw,  # input strides
              sgg, sgc, sgh, sgw,  # output-gradient strides
              BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, TAPS: tl.constexpr):
    # One program: one group, a BN block of its output channels by TAPS taps x a BK block of its input
    # channels (its columns), the pixels of one chunk. Per pixel tile, one product of the output
    # gradient (BN x BP) by the input (BP x TAPS*BK), each tap's columns shifted by that tap: the
    # output-gradient tile is loaded once for TAPS taps, and a product TAPS times wider keeps the
    # tensor cores busier per byte read. A group's tap blocks are neighbouring programs, so they read
    # the same output-gradient tiles while those sit in L2. (Three taps as three separate products,
    # each with its own accumulator and store, made a step slower: docs/BENCHMARKS.md, "Why the pack's
    # defaults are what they are".)
    pid = tl.program_id(0)
    s = tl.program_id(1)
    pid_b = tl.program_id(2)
    n_t = (9 + TAPS - 1) // TAPS
    g = pid // n_t
    j = tl.arange(0, TAPS * BK)
    t = (pid % n_t) * TAPS + j // BK  # each column's tap
    n_ci = tl.cdiv(CIN, BK)
    co = (pid_b // n_ci) * BN + tl.arange(0, BN)
    ci = (pid_b % n_ci) * BK + j % BK  # and its input channel
    dy = t // 3 - 1
    dx = t % 3 - 1
    in_co = co < COUT
    in_col = (ci < CIN) & (t < 9)
    x_g = x_ptr + g * sxg
    gy_g = gy_ptr + g * sgg
    col = dy * sxh + dx * sxw + ci * sxc  # a column's offset from the pixel it is shifted from
    acc = tl.zeros((BN, TAPS * BK), dtype=tl.float32)
    start = s * CHUNK
    for p0 in range(start, start + CHUNK, BP):
        pix = p0 + tl.arange(0, BP)
        py = pix // W
        px = pix % W
        in_p = pix < H * W  # (chunks are whole tiles: a tile never crosses into the next chunk)
        iy = py[:, None] + dy[None, :]
        ix = px[:, None] + dx[None, :]
        ok = in_p[:, None] & in_col[None, :] & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        go = tl.load(gy_g + co[:, None] * sgc + py[None, :] * sgh + px[None, :] * sgw,
                     mask=in_co[:, None] & in_p[None, :], other=0.0)
        xv = tl.load(x_g + (py * sxh + px * sxw)[:, None] + col[None, :], mask=ok, other=0.0)
        acc += tl.dot(go, xv)
    G = tl.num_programs(0) // n_t
    # (chunk, group, tap, out, in): a tap's rows contiguous, so the store coalesces
    out = part_ptr + (((s * G + g) * 9 + t[None, :]) * COUT + co[:, None]) * CIN + ci[None, :]
    tl.store(out, acc, mask=in_co[:, None] & in_col[None, :])


def weight_grad(x: torch.Tensor, gy: torch.Tensor, groups: int, shape: torch.Size) -> torch.Tensor:
    """The weight gradient (``shape``: G*Cout, Cin, 3, 3, or any shape of as many elements in that order)
    of ``conv3x3`` of ``x`` (1, G*Cin, H, W) whose output gradient is ``gy`` (1, G*Cout, H, W), in float32.

    Each group's pixels are cut into chunks summed by separate programs (enough of them to
    fill the card), and the chunks' float32 partial sums are added afterwards in a fixed
    order: the same result every run.
    """
    _, _, h, wd = x.shape
    g = groups
    cin, cout = x.shape[1] // g, gy.shape[1] // g
    (bp, warps, stages, taps), bn, bk = TILES["wgrad"], _block(cout), _block(cin)
    # as many chunks as fill the card at one tap a program; more taps a program make fewer, longer
    # programs rather than more partial sums to add
    splits = max(1, min(triton.cdiv(h * wd, 4 * bp), triton.cdiv(2048, 9 * g)))
    chunk = triton.cdiv(triton.cdiv(h * wd, splits), bp) * bp
    part = torch.empty((splits, g, 9, cout, cin), dtype=torch.float32, device=x.device)
    fits_int32(x, gy, part)
    sx, sg = x.stride(), gy.stride()
    grid = (triton.cdiv(9, taps) * g, splits, triton.cdiv(cout, bn) * triton.cdiv(cin, bk))
    _wgrad3x3[grid](x, gy, part, h, wd, cin, cout, chunk,
                    cin * sx[1], sx[1], sx[2], sx[3],
                    cout * sg[1], sg[1], sg[2], sg[3],
                    BP=bp, BN=bn, BK=bk, TAPS=taps, num_warps=warps, num_stages=stages)
    return part.sum(0).permute(0, 2, 3, 1).reshape(shape)  # taps last, as the weights hold them


# Tile shapes for the two kernels: (pixels per tile, warps, pipeline stages), then for the
# convolution the cache its tile copies go through: "" (L2 only) or ".ca" (L1 too, where a tap's
# tile overlaps the last tap's and a group's weights serve its neighbouring tiles), and for the
# weight gradient the taps a program takes (1, 2 or 4: a power of two, the product's width). The
# channel sides come from the channel counts. What benchmarks/gpu_check.py's sweeps kept: 2 taps a
# program beat 1, the L1 copies were within the noise of L2 only, and every other shape swept was
# slower (docs/BENCHMARKS.md, "Why the pack's defaults are what they are").
TILES = {"conv": (128, 4, 3, ".ca"), "wgrad": (64, 4, 3, 2)}


def fits_int32(*tensors: torch.Tensor) -> None:
    """Our Triton kernels (these and ``pack.triton_adam``'s) index in 32 bits: refuse (the pack's probe
    then keeps another way) rather than wrap."""
    for t in tensors:
        if t.numel() >= 2**31:
            raise ValueError(f"zssr-batch's Triton kernels: a tensor of {t.numel()} elements is beyond "
                             "32-bit indexing")


def _block(c: int) -> int:
    """A tile side for ``c`` channels: a power of two from 16 (``tl.dot``'s least) to 64."""
    return max(16, min(64, triton.next_power_of_2(c)))


def tap_major(w: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Weights (G, Cout, Cin, 3, 3) as ``conv3x3`` takes them: (G, 3, 3, Cin, Cout), output channels
    contiguous, so that each tap's weight tile is one vector-loaded block. One copy (and cast)."""
    g, cout, cin = w.shape[:3]
    return torch.empty((g, 3, 3, cin, cout), dtype=dtype or w.dtype, device=w.device).copy_(w.permute(0, 3, 4, 2, 1))


def conv3x3(x: torch.Tensor, wk: torch.Tensor, flip: bool = False, relu: bool = False,
            mask_by: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` (1, G*Cin, H, W), ``wk`` (G, 3, 3, Cin, Cout) (``tap_major``; any strides) -> (1, G*Cout, H, W),
    in ``x``'s layout and dtype.

    ``flip`` mirrors the taps: with ``wk`` given as its in/out transpose, the input gradient.
    ``relu`` passes the output through a ReLU; ``mask_by`` zeroes it where that tensor (of the
    output's shape: a ReLU's output) is not positive.
    """
    _, _, h, wd = x.shape
    g, cin, cout = wk.shape[0], wk.shape[3], wk.shape[4]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    y = torch.empty((1, g * cout, h, wd), dtype=x.dtype, device=x.device, memory_format=fmt)
    m = y if mask_by is None else mask_by
    fits_int32(x, y)
    sx, sy, sw, sm = x.stride(), y.stride(), wk.stride(), m.stride()
    (bm, warps, stages, cache), bn, bk = TILES["conv"], _block(cout), _block(cin)
    grid = (triton.cdiv(h * wd, bm), triton.cdiv(cout, bn), g)
    _conv3x3[grid](x, wk, y, m, h, wd, cin, cout,
                   cin * sx[1], sx[1], sx[2], sx[3],
                   sw[0], sw[4], sw[3], sw[1], sw[2],
                   cout * sy[1], sy[1], sy[2], sy[3],
                   cout * sm[1], sm[1], sm[2], sm[3],
                   FLIP=int(flip), RELU=int(relu), MASK=int(mask_by is not None),
                   BM=bm, BN=bn, BK=bk, CACHE=cache, num_warps=warps, num_stages=stages)
    return y
