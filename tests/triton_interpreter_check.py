"""The Triton way of running a pack against cuDNN's grouped convolutions and the pack's torch Adam,
on a CPU through Triton's interpreter; prints one JSON object of the largest differences found.

Run as a program in its own process with ``TRITON_INTERPRET=1`` (the interpreter is chosen when
a kernel is defined, so the variable must be set before Triton is imported), from this folder:
``tests/test_pack_conv.py`` does so and checks the figures.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from pack_helpers import small_pack
from zssr_batch.config import resolve
from zssr_batch.pack import triton_conv
from zssr_batch.pack.jobs import Job
from zssr_batch.pack.loop import fit_packed
from zssr_batch.pack.nets import PackedAdam, PackedNets
from zssr_batch.pack.options import PackOptions


def networks(nets: PackedNets, x: torch.Tensor, slots: torch.Tensor) -> dict:
    """The packed networks' outputs and weight gradients, the Triton way against the grouped one, in
    both memory layouts, and whether every tensor the kernels read is channels-last when the pack
    lays its activations out so."""
    ref = nets(x, slots)
    g_ref = torch.autograd.grad(ref.square().sum(), list(nets.weights))
    res: dict = {"out": 0.0, "grad": 0.0}
    seen: list[bool] = []
    real = (triton_conv.conv3x3, triton_conv.weight_grad)

    def conv_seen(x, *a, **k):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return real[0](x, *a, **k)

    def wgrad_seen(x, gy, *a):
        seen.extend(t.is_contiguous(memory_format=torch.channels_last) for t in (x, gy))
        return real[1](x, gy, *a)

    for layout in (False, True):
        seen.clear()
        triton_conv.conv3x3, triton_conv.weight_grad = conv_seen, wgrad_seen
        out = nets(x, slots, layout, "triton")
        g = torch.autograd.grad(out.square().sum(), list(nets.weights))
        triton_conv.conv3x3, triton_conv.weight_grad = real
        if layout:  # one forward a layer, one input gradient for all but the first, one weight gradient each
            res["channels_last"] = all(seen) and len(seen) == 2 * len(nets.weights) - 1 + 2 * len(nets.weights)
        res["out"] = max(res["out"], float((out - ref).abs().max()))
        res["grad"] = max(res["grad"], max(float(((a - b).abs() / (b.abs().max() + 1e-12)).max())
                                           for a, b in zip(g, g_ref)))
    return res


def half_precision(gen: torch.Generator) -> dict:
    """The convolution kernel in float16 (bfloat16 has no NumPy type for the interpreter) against the
    float32 sum of the same float16 values, and that sum's scale."""
    xh, wh = torch.randn(1, 2 * 16, 9, 11, generator=gen), torch.randn(2 * 8, 16, 3, 3, generator=gen)
    exact = torch.nn.functional.conv2d(xh.half().float(), wh.half().float(), padding=1, groups=2)
    got = triton_conv.conv3x3(xh.half(), triton_conv.tap_major(wh.half().view(2, 8, 16, 3, 3))).float()
    return {"half": float((got - exact).abs().max()), "half_scale": float(exact.abs().max())}


def weight_gradient_tiles(gen: torch.Generator) -> float:
    """The weight-gradient kernel with its pixels cut into several chunks (a 24x25 image), at several
    tile shapes, against autograd's: the largest difference relative to the gradient's scale."""
    xw = torch.randn(1, 2 * 16, 24, 25, generator=gen)
    ww = torch.randn(2 * 16, 16, 3, 3, generator=gen, requires_grad=True)
    yw = torch.nn.functional.conv2d(xw, ww, padding=1, groups=2)
    gyw = torch.randn(yw.shape, generator=gen)
    ref_w, = torch.autograd.grad(yw, ww, gyw)
    worst = 0.0
    # 3 chunks of 64-pixel tiles, 5 of 32; one tap a program, or 2 or 4 (the last program's columns partly past tap 9)
    for tiles in ((64, 4, 3, 1), (32, 4, 3, 1), (64, 4, 3, 2), (32, 4, 3, 4)):
        triton_conv.TILES = {**triton_conv.TILES, "wgrad": tiles}
        got = triton_conv.weight_grad(xw, gyw, 2, ww.shape)
        worst = max(worst, float((got - ref_w).abs().max() / ref_w.abs().max()))
    return worst


def fused_adam(gen: torch.Generator) -> float:
    """The pack's Adam as one kernel (the Triton way's) against ``PackedAdam``'s torch operations, rows
    sitting out some steps: the largest difference in weights and moments."""
    flat_a = torch.randn(3, 2500, generator=gen)
    flat_b = flat_a.clone()
    opt_a, opt_b = PackedAdam(flat_a), PackedAdam(flat_b, fused=True)
    for step in range(7):
        ga = torch.randn(3, 2500, generator=gen)
        active = torch.tensor([True, step % 2 == 0, step < 4])
        for opt in (opt_a, opt_b):
            opt.step([ga.clone()], torch.tensor([1e-3, 1e-4, 5e-3], dtype=torch.float64), active)
    return max(float((a - b).abs().max()) for a, b in ((flat_a, flat_b), (opt_a.m, opt_b.m), (opt_a.v, opt_b.v)))


def pack_losses(gen: torch.Generator) -> float:
    """Two images fitted in a pack the grouped way and the Triton way: the largest loss difference.

    Three layers (first, hidden, last), as many as it takes for every kernel the Triton way launches
    in a step: the interpreter's time grows with the layers, and the paper's other five hidden
    layers would only repeat the hidden layer's launches."""
    cfg = resolve("fast", overrides={"max_iters": 4, "crop": 16, "width": 8, "depth": 3})
    imgs = [torch.rand(3, 20, 22, generator=gen) for _ in range(2)]
    a = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2))
    b = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2, options=PackOptions(conv="triton")))
    return max(float(np.abs(np.array(a[i].log.loss) - np.array(b[i].log.loss)).max()) for i in range(2))


def main() -> None:
    nets, x, slots, gen = small_pack()
    res = networks(nets, x, slots)
    res.update(half_precision(gen))
    res["wgrad"] = weight_gradient_tiles(gen)
    res["adam"] = fused_adam(gen)
    res["loss"] = pack_losses(gen)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
