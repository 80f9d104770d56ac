"""Other ways of running a pack's grouped 3x3 convolutions (padding 1): the same sums, other kernels.

A pack's layers are grouped convolutions, one group per image, and cuDNN may run
grouped convolutions with direct kernels far slower than its dense ones (a public
profile, pytorch/pytorch#34977, has ``wgrad2d_grouped_direct_kernel`` at two thirds
of a grouped layer's time). Which way is fastest depends on the card and the
releases, so ``pack.size`` times them and the pack keeps the fastest:

- 'grouped': ``F.conv2d(..., groups=K)``, cuDNN throughout (in ``pack.nets``);
- 'split': cuDNN's forward and input gradient; the weight gradient as nine
  batched matrix products (``weight_grad_by_taps``);
- 'triton': forward and input gradient as one implicit-GEMM Triton kernel, the
  weight gradient as another (``pack.triton_conv``; GPU builds of torch ship
  Triton). No cuDNN or cuBLAS at all;
- 'bmm': im2col and batched products throughout (``bmm_layers``), the whole network at once: a
  reference for benchmarks, never chosen by ``pack.size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONVS = ("grouped", "split", "triton", "bmm")


def triton_available() -> bool:
    """Whether the 'triton' way can run here (Triton importable)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def weight_grad_by_taps(x: torch.Tensor, gy: torch.Tensor, groups: int, shape: torch.Size) -> torch.Tensor:
    """The weight gradient of a grouped 3x3 convolution (padding 1) of ``x`` (1, G*Cin, H, W) whose
    output gradient is ``gy`` (1, G*Cout, H, W), shaped ``shape`` (G*Cout, Cin, 3, 3).

    Group g's gradient for tap (dy, dx) is its output gradient times its input shifted by the
    tap. Over rows padded to width W+2 a shift is a contiguous run of positions, so each tap
    is one strided batched product over all groups, with no im2col copy (the two extra columns
    carry zero gradient).
    """
    n = groups
    cin, h, wd = x.shape[1] // n, x.shape[2], x.shape[3]
    cout = gy.shape[1] // n
    row = wd + 2
    # (n, h+3, W+2, cin): one spare row below, so the last tap's run stays inside the buffer
    xs = F.pad(x.reshape(n, cin, h, wd).permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 2)).reshape(n, -1, cin)
    gs = F.pad(gy.reshape(n, cout, h, wd).permute(0, 2, 3, 1), (0, 0, 0, 2)).reshape(n, h * row, cout)
    taps = torch.empty(9, n, cout, cin, dtype=gy.dtype, device=gy.device)
    for t in range(9):
        off = (t // 3) * row + t % 3
        torch.bmm(gs.transpose(1, 2), xs[:, off:off + h * row], out=taps[t])
    return taps.permute(1, 2, 3, 0).reshape(shape)


class _SplitConv(torch.autograd.Function):
    """cuDNN's grouped forward and input gradient; the weight gradient by ``weight_grad_by_taps``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.groups = groups
        return F.conv2d(x, w, padding=1, groups=groups)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                                     ctx.groups, [True, False, False])[0]
        return gx, weight_grad_by_taps(x, gy, ctx.groups, w.shape), None


class _TritonConv(torch.autograd.Function):
    """Forward, input and weight gradients by ``pack.triton_conv``'s kernels, ReLUs fused.

    ``relu`` applies the layer's ReLU as the output is stored; ``after_relu`` (the input is
    a ReLU's output) zeroes the input gradient where that input is zero, as the ReLU's own
    backward would, as the input gradient is stored. A ``relu`` layer therefore counts on
    its consumer being an ``after_relu`` one: the gradient it receives is already taken
    through its ReLU (as in ``PackedNets``, whose layers chain so).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, relu: bool, after_relu: bool) -> torch.Tensor:  # type: ignore[override]
        from .triton_conv import conv3x3, tap_major

        wk = tap_major(w, x.dtype)  # the weights in the kernel's layout and the activations' dtype: one copy
        ctx.save_for_backward(x, wk)
        ctx.after_relu = after_relu
        ctx.w_shape = w.shape
        return conv3x3(x, wk, relu=relu)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        from .triton_conv import conv3x3, weight_grad

        x, wk = ctx.saved_tensors
        # The kernels load channel runs: the output gradient must be laid out as the activations are.
        # The last layer's arrives NCHW from the residual sum; without this it would stay NCHW through
        # every input gradient below (each follows its output gradient's layout), where shifted pixel
        # runs load unaligned, a slower step (docs/BENCHMARKS.md, "Why the pack's defaults are what they are").
        if x.is_contiguous(memory_format=torch.channels_last):
            gy = gy.contiguous(memory_format=torch.channels_last)
        gx = None
        if ctx.needs_input_grad[0]:  # through the mirrored taps, in/out swapped (a strided view, no copy)
            gx = conv3x3(gy, wk.transpose(3, 4), flip=True, mask_by=x if ctx.after_relu else None)
        return gx, weight_grad(x, gy, wk.shape[0], ctx.w_shape), None, None


def triton_conv(x: torch.Tensor, w: torch.Tensor, relu: bool = False, after_relu: bool = False) -> torch.Tensor:
    """``F.conv2d(x, w.flatten(0, 1), padding=1, groups=G)`` for ``w`` (G, Cout, Cin, 3, 3), by the Triton kernels,
    in the current autocast's dtype (the weights stay float32; their gradient is float32), with the ReLU
    fused as ``_TritonConv`` says."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        x = x.to(torch.get_autocast_dtype(dev))
    with torch.autocast(dev, enabled=False):
        return _TritonConv.apply(x, w, relu, after_relu)


def split_conv(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1, groups=groups)``, run the 'split' way, under the current autocast (in its
    dtype: the products round as cuDNN's would)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, w = x.to(dt), w.to(dt)
    with torch.autocast(dev, enabled=False):
        return _SplitConv.apply(x, w, groups)


def bmm_layers(x: torch.Tensor, weights: list[torch.Tensor], slots: torch.Tensor | None) -> torch.Tensor:
    """The residual of the K networks whose layer weights are ``weights`` ((K, out, in, 3, 3) each) on
    ``x`` (N, C, H, W), row n the input of slot ``slots[n]`` (default: all K slots), as im2col and
    batched matrix products: row n's 3x3 neighbourhoods (C*9, H*W), in ``unfold``'s channel-major
    order, times slot n's (out, C*9) weights. Returns (N, C, H, W), the ReLUs between layers applied."""
    n, c, h, w = x.shape
    y = x
    for i, wt in enumerate(weights):
        if slots is not None:
            wt = wt.index_select(0, slots)
        y = torch.bmm(wt.reshape(n, wt.shape[1], -1), F.unfold(y, 3, padding=1)).view(n, -1, h, w)
        if i < len(weights) - 1:
            y = torch.relu(y)
    return y
