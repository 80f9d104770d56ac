"""The ways of running a pack's convolutions (grouped, split, bmm, padded thin ends, our Triton kernels)
train the same networks; the Triton kernels build for an H100 and refuse what 32-bit indexing cannot reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pack_helpers import small_pack
from zssr_batch.config import resolve
from zssr_batch.pack.jobs import Job
from zssr_batch.pack.loop import fit_packed
from zssr_batch.pack.options import PackOptions

HERE = Path(__file__).resolve().parent



def test_every_convolution_formulation_trains_the_same_networks():
    # 'bmm' (im2col + one batched product per layer), 'split' (weight gradients as nine shifted
    # batched products) and pad_thin (3-channel ends padded to 8) are other ways of computing the
    # same K networks: outputs and weight gradients must agree to float rounding (sums in another
    # order: 1e-6 on outputs of ~1, 1e-5 relative on gradients), in both memory layouts.
    nets, x, slots, gen = small_pack()
    ref = nets(x, slots)
    g_ref = torch.autograd.grad(ref.square().sum(), list(nets.weights))
    assert float(g_ref[0][1].abs().sum()) == 0 and float(g_ref[0][2].abs().sum()) > 0  # slot 1 sat out
    for conv, pad, layout in [("bmm", False, False), ("split", False, False), ("split", False, True),
                              ("grouped", True, False), ("grouped", True, True), ("split", True, True)]:
        out = nets(x, slots, layout, conv, pad)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6), (conv, pad, layout)
        g = torch.autograd.grad(out.square().sum(), list(nets.weights))
        assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(g, g_ref)), (conv, pad, layout)
    # Under bfloat16 autocast 'split' runs its products in bfloat16 too: the same rounding as cuDNN's.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = nets(x, slots, True, "grouped", True)
        b = nets(x, slots, True, "split", True)
        ga = torch.autograd.grad(a.float().square().sum(), list(nets.weights))
        gb = torch.autograd.grad(b.float().square().sum(), list(nets.weights))
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(u, v, rtol=1e-2, atol=1e-2 * float(v.abs().max())) for u, v in zip(ga, gb))
    cfg = resolve("fast", overrides={"max_iters": 12, "crop": 24, "width": 16})
    imgs = [torch.rand(3, 30, 32, generator=gen) for _ in range(2)]
    base = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2))
    for options in (PackOptions(conv="bmm"), PackOptions(conv="split", pad_thin=True)):
        other = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2, options=options))
        for i in range(2):
            assert np.allclose(base[i].log.loss, other[i].log.loss, atol=1e-5), options


@pytest.mark.slow
def test_the_triton_kernel_trains_the_same_networks():
    # conv="triton" (our kernels for the forward, input and weight gradients) must be the same
    # networks as cuDNN's grouped convolutions. Run by Triton's interpreter on this CPU, in a
    # fresh process (the interpreter is chosen when the kernel is defined): float32 to 1e-5 as
    # above; float16 to its rounding of the float32 sum (~1e-3 of the largest output).
    pytest.importorskip("triton", reason="triton is in the test extra: pip install -e '.[test]'")
    out = subprocess.run([sys.executable, str(HERE / "triton_interpreter_check.py")], capture_output=True, text=True,
                         timeout=300, cwd=HERE, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["out"] < 1e-6 and res["grad"] < 1e-5 and res["wgrad"] < 1e-5, res
    assert res["adam"] < 1e-6, res  # as test_packed_adam_matches_torch_adam_per_slot: float rounding only
    # The kernels' loads are fast along channels: on an H100 an NCHW gradient reaching them cost 1 ms a step.
    assert res["channels_last"], res
    assert res["half"] < 2e-3 * res["half_scale"], res
    assert res["loss"] < 1e-5, res


def _hopper_ptx(fn, args: dict, constexprs: dict, warps: int, stages: int) -> str:
    """PTX of Triton kernel ``fn`` built for an H100 (sm_90), its arguments specialized as a launch would:
    pointers (given as dtype strings) and integers divisible by 16 marked so, integers equal to 1 constant."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, consts, attrs = {}, dict(constexprs), {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        value = args[name]
        if isinstance(value, str):
            sig[name], attrs[(i,)] = value, [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        elif value == 1:
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    try:
        source = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    except TypeError:
        pytest.skip("this Triton release builds kernels through another API")
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          # FP fusion as launches get it by default up to Triton 3.9 (3.10 turns it off)
                          options={"num_warps": warps, "num_stages": stages, "enable_fp_fusion": True}).asm["ptx"]


def test_the_triton_kernels_build_for_an_h100():
    # The interpreter checks the kernels' arithmetic, not that a GPU can build them, nor how. Here
    # Triton's compiler and the ptxas in its wheel build them for an H100 (sm_90), as a launch at
    # the default tiles would for the paper network (channels-last activations of 32 fits at 128x128):
    # the forward with its ReLU, the input gradient with the ReLU's mask, the 3-channel first layer,
    # and the weight gradient. Each must feed tensor-core products (wgmma) from tiles all loaded
    # asynchronously (cp.async: the pipelined loop over channel runs), the form measured on an H100
    # (docs/BENCHMARKS.md). NCHW activations, say, still build, but load their tiles synchronously.
    pytest.importorskip("triton", reason="triton is in the test extra: pip install -e '.[test]'")
    import re

    from zssr_batch.pack import triton_conv as tri

    g, h, w = 32, 128, 128
    act = lambda c: (c, 1, w * g * c, g * c)  # noqa: E731 - channels-last strides: group, channel, row, column

    def conv_args(cin: int, cout: int, flip: bool) -> dict:
        wk = torch.empty(g, 3, 3, cin, cout)  # tap_major; the input gradient reads its in/out transpose
        sw = wk.transpose(3, 4).stride() if flip else wk.stride()
        if flip:
            cin, cout = cout, cin
        return {"x_ptr": "*bf16", "w_ptr": "*bf16", "y_ptr": "*bf16", "m_ptr": "*bf16", "H": h, "W": w,
                "CIN": cin, "COUT": cout, **dict(zip(("sxg", "sxc", "sxh", "sxw"), act(cin))),
                "swg": sw[0], "swo": sw[4], "swi": sw[3], "swh": sw[1], "sww": sw[2],
                **dict(zip(("syg", "syc", "syh", "syw"), act(cout))),
                **dict(zip(("smg", "smc", "smh", "smw"), act(cout)))}

    bm, warps, stages, cache = tri.TILES["conv"]
    ptx = {}
    for name, (cin, cout, flip, relu, mask) in {"forward, ReLU": (64, 64, False, 1, 0),
                                                "input gradient, ReLU mask": (64, 64, True, 0, 1),
                                                "first layer": (3, 64, False, 1, 0)}.items():
        a = conv_args(cin, cout, flip)
        ptx[name] = _hopper_ptx(tri._conv3x3, a, {"FLIP": int(flip), "RELU": relu, "MASK": mask, "BM": bm,
                                                  "BN": tri._block(a["COUT"]), "BK": tri._block(a["CIN"]),
                                                  "CACHE": cache},
                                warps, stages)
    assert cache == ".ca" and "cp.async.ca" in ptx["forward, ReLU"]  # the default's copies go through L1 too
    a = conv_args(64, 64, False)  # the sweep's other cache: the same copies, through L2 only
    ptx["forward, copies through L2"] = _hopper_ptx(tri._conv3x3, a, {"FLIP": 0, "RELU": 1, "MASK": 0, "BM": bm,
                                                                      "BN": 64, "BK": 64, "CACHE": ""}, warps, stages)
    assert "cp.async.cg" in ptx["forward, copies through L2"]
    strides = lambda prefix: dict(zip((f"{prefix}g", f"{prefix}c", f"{prefix}h", f"{prefix}w"), act(64)))  # noqa: E731
    wargs = {"x_ptr": "*bf16", "gy_ptr": "*bf16", "part_ptr": "*fp32", "H": h, "W": w, "CIN": 64, "COUT": 64,
             "CHUNK": 2048, **strides("sx"), **strides("sg")}
    # the default (2 taps a program) and the sweep's others (gpu_check.py): 1 tap, 4 in 32-pixel tiles
    assert tri.TILES["wgrad"] == (64, 4, 3, 2)
    for name, (bp, warps, stages, taps) in {"weight gradient": (64, 4, 3, 1),
                                            "weight gradient, 2 taps": tri.TILES["wgrad"],
                                            "weight gradient, 4 taps": (32, 4, 3, 4)}.items():
        ptx[name] = _hopper_ptx(tri._wgrad3x3, wargs, {"BP": bp, "BN": 64, "BK": 64, "TAPS": taps}, warps, stages)
    from zssr_batch.pack import triton_adam as adam_triton

    adam = _hopper_ptx(adam_triton._adam_rows, {"p_ptr": "*fp32", "g_ptr": "*fp32", "m_ptr": "*fp32", "v_ptr": "*fp32",
                                                "c_ptr": "*fp32", "P": 224640, "eps": 1e-8}, {"BLOCK": adam_triton.BLOCK},
                       4, 3)
    assert "ld.global.v4" in adam and "st.global.v4" in adam  # the rows streamed in 16-byte accesses
    copies = {name: len(re.findall(r"cp\.async\.c[ag]\.shared\.global", text)) for name, text in ptx.items()}
    for name, text in ptx.items():
        assert copies[name] and "wgmma.mma_async" in text, name
        # (The mask is read synchronously, once, after the loop; the first layer's 3-channel input in
        # 6-byte runs, too narrow to copy asynchronously: 1% of the FLOPs.)
        if name not in ("input gradient, ReLU mask", "first layer"):
            assert "ld.global" not in text, name
    assert copies["input gradient, ReLU mask"] == copies["forward, ReLU"]  # the same loop
    # the weight gradient's partial sums leave in 16-byte stores (taps outside the tile: coalesced)
    for name in ("weight gradient", "weight gradient, 2 taps", "weight gradient, 4 taps"):
        assert "st.global.v4" in ptx[name], name
    # a wider product is one instruction per k-step as wide as its taps' columns, not several 64-wide ones
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n128k16", ptx["weight gradient, 2 taps"])
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n256k16", ptx["weight gradient, 4 taps"])


def test_the_triton_kernels_refuse_what_32_bit_indexing_cannot_reach():
    # A pack too large for the kernels' 32-bit offsets must fail loudly (the probe then keeps another
    # way) instead of writing somewhere else. Meta tensors: the sizes without the memory.
    pytest.importorskip("triton", reason="triton is in the test extra")
    from zssr_batch.pack import triton_adam as adam_triton
    from zssr_batch.pack import triton_conv as conv3x3_triton

    big = torch.empty(1, 2 * 64, 4096, 4096, device="meta")
    with pytest.raises(ValueError, match="32-bit"):
        conv3x3_triton.conv3x3(big, torch.empty(2, 3, 3, 64, 64, device="meta"))
    with pytest.raises(ValueError, match="32-bit"):
        conv3x3_triton.weight_grad(big, big, 2, torch.Size((128, 64, 3, 3)))
    rows = torch.empty(128, 2**24, device="meta")
    with pytest.raises(ValueError, match="32-bit"):
        adam_triton.adam_rows(rows, rows, rows, rows, torch.empty(128, 5, device="meta"), 1e-8)
