"""Other ways of running a pack's grouped 3x3 convolutions (padding 1): the same sums, other kernels.

A pack's layers are grouped convolutions, one group per image, and cuDNN may run
grouped convolutions with direct kernels far slower than its dense ones (a public
profile, pytorch/pytorch#34977, has ``wgrad2d_grouped_direct_kernel`` at two thirds
of a grouped layer's time). Which way is fastest depends on the card and the
releases, so ``pack_size`` times them and the pack keeps the fastest:

- 'grouped': ``F.conv2d(..., groups=K)``, cuDNN throughout (in ``packed``);
- 'split': cuDNN's forward and input gradient; the weight gradient as nine
  batched matrix products (``weight_grad_by_taps``);
- 'triton': forward and input gradient as one implicit-GEMM Triton kernel, the
  weight gradient as another (``conv3x3_triton``; GPU builds of torch ship
  Triton). No cuDNN or cuBLAS at all.
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
    """Forward, input and weight gradients by ``conv3x3_triton``'s kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:  # type: ignore[override]
        from .conv3x3_triton import conv3x3

        ctx.save_for_backward(x, w)
        ctx.groups = groups
        return conv3x3(x, w.view(groups, -1, *w.shape[1:]), groups)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        from .conv3x3_triton import conv3x3, weight_grad

        x, w = ctx.saved_tensors
        n = ctx.groups
        gx = None
        if ctx.needs_input_grad[0]:  # the output gradient through the mirrored, in/out-swapped weights
            gx = conv3x3(gy, w.view(n, -1, *w.shape[1:]).transpose(1, 2), n, flip=True)
        return gx, weight_grad(x, gy, n, w.shape), None


def custom_conv(conv: str, x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1, groups=groups)``, run the ``conv`` way ('split' or 'triton'), under the
    current autocast (both run in its dtype: the products round as cuDNN's would)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, w = x.to(dt), w.to(dt)
    fn = {"split": _SplitConv, "triton": _TritonConv}[conv]
    with torch.autocast(dev, enabled=False):
        return fn.apply(x, w, groups)
