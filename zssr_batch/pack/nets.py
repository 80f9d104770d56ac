"""K ZSSR networks as one set of grouped convolutions (``PackedNets``), their slot-wise Adam
(``PackedAdam``), and one slot's weights as a ``ZSSRNet``'s layers."""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.model import ZSSRNet
from ..engine.pairs import upload
from .conv import bmm_layers, split_conv, triton_conv


class PackedNets(nn.Module):
    """K ZSSR networks; layer weights (K, out, in, 3, 3), run as one grouped convolution.

    Every layer's weights are a view of ``flat`` (K, P), one row per slot, so the
    optimizer updates all layers with a dozen whole-pack operations instead of a
    dozen per layer (each one a kernel launch inside a GPU step). Build it on its
    ``device``: ``.to()`` would give the layers copies apart from ``flat``.
    """

    def __init__(self, k: int, channels: int, depth: int, width: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        sizes = [channels] + [width] * (depth - 1) + [channels]
        shapes = [(cout, cin, 3, 3) for cin, cout in zip(sizes[:-1], sizes[1:])]
        self.flat = torch.zeros(k, sum(math.prod(s) for s in shapes), device=device)
        views, at = [], 0
        for shape in shapes:
            n = math.prod(shape)
            views.append(nn.Parameter(self.flat[:, at:at + n].view(k, *shape)))  # shares flat's memory
            at += n
        self.weights = nn.ParameterList(views)

    def init_slot(self, slot: int, init_variance: float, gen: torch.Generator) -> None:
        """Draw slot's weights exactly as ``ZSSRNet`` draws them from the same generator."""
        with torch.no_grad():
            for w in self.weights:
                fan_in = w.shape[2] * 9
                fresh = torch.empty(w.shape[1:]).normal_(0.0, math.sqrt(init_variance / fan_in), generator=gen)
                w[slot].copy_(upload(fresh, w.device))

    def forward(self, x: torch.Tensor, slots: torch.Tensor | None = None, channels_last: bool = False,
                conv: str = "grouped", pad_thin: bool = False) -> torch.Tensor:
        """``x``: (N, C, H, W), row n the input of slot ``slots[n]`` (default: all K slots) -> (N, C, H, W).

        ``conv``: 'grouped' (cuDNN's grouped convolutions), 'split' or 'triton' (see
        ``pack.conv``) or 'bmm' (im2col and batched products throughout). ``pad_thin`` runs the
        C-channel ends (the first layer's input, the last layer's output) padded with
        zeros to a multiple of 8 channels, the group width tensor-core kernels take:
        the same sums, the padded weights constant zeros.
        """
        if conv == "bmm":
            return x + bmm_layers(x, list(self.weights), slots).to(x.dtype)
        n, c, h, w = x.shape
        cp = -(-c // 8) * 8 if pad_thin else c
        y = F.pad(x, (0, 0, 0, 0, 0, cp - c)) if cp > c else x
        y = y.reshape(1, n * cp, h, w)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        y = y.contiguous(memory_format=fmt)
        last = len(self.weights) - 1
        for i, wt in enumerate(self.weights):
            if slots is not None:  # a draining pack computes only its live slots
                wt = wt.index_select(0, slots)
            if cp > c and i == 0:
                wt = F.pad(wt, (0, 0, 0, 0, 0, cp - c))  # zero weights on the zero input channels
            if cp > c and i == last:
                wt = F.pad(wt, (0, 0, 0, 0, 0, 0, 0, cp - c))  # outputs that stay zero, dropped below
            if conv == "triton":  # its own weight layout, and the ReLUs fused into its kernels
                y = triton_conv(y, wt, relu=i < last, after_relu=i > 0)
                continue
            wt = wt.reshape(-1, *wt.shape[2:]).contiguous(memory_format=fmt)
            y = F.conv2d(y, wt, padding=1, groups=n) if conv == "grouped" else split_conv(y, wt, n)
            if i < last:
                y = torch.relu(y)
        return x + y.reshape(n, cp, h, w)[:, :c].to(x.dtype)


class PackedAdam:
    """torch's Adam applied slot-wise to a (K, P) parameter tensor: a step count and a learning rate per
    row, all on the device, in a dozen whole-pack operations (or, ``fused``, one Triton kernel)."""

    def __init__(self, flat: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8, fused: bool = False) -> None:
        self.p, self.betas, self.eps = flat, betas, eps
        self.fused = fused  # one Triton kernel for the update (``pack.triton_adam``): the pack's Triton way
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat)
        self.t = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)

    def reset(self, slot: int) -> None:
        self.m[slot].zero_()
        self.v[slot].zero_()
        self.t[slot] = 0

    def keep(self, idx: torch.Tensor, flat: torch.Tensor) -> PackedAdam:
        """This optimizer's state for rows ``idx`` only, driving ``flat`` (a compacted pack)."""
        opt = PackedAdam(flat, self.betas, self.eps, self.fused)
        for new, old in ((opt.m, self.m), (opt.v, self.v), (opt.t, self.t)):
            new.copy_(old.index_select(0, idx))
        return opt

    @torch.no_grad()
    def step(self, grads: Iterable[torch.Tensor], lr: torch.Tensor, active: torch.Tensor) -> None:
        """``grads``: (K, ...) tensors whose rows, flattened and joined, line up with the parameter rows;
        ``lr``: (K,) float64 rates; ``active``: (K,) bool, the slots that took this step (others stay put).

        The same arithmetic as ``torch.optim.Adam`` (single-tensor) on each active row; an inactive
        row's moments are left as they are by per-row coefficients (0 and 1), not by copies.
        """
        b1, b2 = self.betas
        dt = self.p.dtype
        g = torch.cat([x.reshape(x.shape[0], -1) for x in grads], dim=1)
        self.t += active.double()
        t = self.t.clamp(min=1)
        keep = active[:, None]
        step_size = torch.where(active, lr / (1 - b1 ** t), 0.0).to(dt)[:, None]
        bc2_sqrt = (1 - b2 ** t).sqrt().to(dt)[:, None]
        m_weight = torch.where(keep, 1 - b1, 0.0).to(dt)
        v_decay = torch.where(keep, b2, 1.0).to(dt)
        v_gain = torch.where(keep, 1 - b2, 0.0).to(dt)
        if self.fused:
            from .triton_adam import adam_rows

            coef = torch.cat([m_weight, v_decay, v_gain, step_size, bc2_sqrt], dim=1)
            adam_rows(self.p, g, self.m, self.v, coef, self.eps)
            return
        self.m.lerp_(g, m_weight)
        self.v.mul_(v_decay).addcmul_(g * v_gain, g)
        denom = (self.v.sqrt() / bc2_sqrt).add_(self.eps)
        self.p.sub_(self.m.div(denom).mul_(step_size))


def slot_layers(row: torch.Tensor, like: ZSSRNet) -> Iterator[torch.Tensor]:
    """One slot's flat row of weights (on any device) as views shaped like ``like``'s layers, in
    order, as ``PackedNets`` lays them out."""
    at = 0
    for conv in like.convs:
        n = conv.weight.numel()
        yield row[at:at + n].view_as(conv.weight)
        at += n


def load_slot(slot_net: ZSSRNet, row: torch.Tensor) -> ZSSRNet:
    """``slot_net`` (a one-slot network) given one slot's weights, from its flat row."""
    with torch.no_grad():
        for conv, w in zip(slot_net.convs, slot_layers(row, slot_net)):
            conv.weight.copy_(w)
    return slot_net
