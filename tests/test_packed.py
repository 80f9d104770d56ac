"""Packed fits (K networks in grouped convolutions) equal fitting each image alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import have_data, hr_path
from zssr_batch.config import resolve
from zssr_batch.engine.super_resolve import super_resolve
from zssr_batch.files.images import load_image
from zssr_batch.pack.packed import Job, PackedAdam, PackOptions, fit_packed


def _crops() -> list[torch.Tensor]:
    if have_data():
        img = torch.from_numpy(load_image(hr_path("Set5", "baby")).color)
        return [img[:, 40:70, 50:84], img[:, 200:240, 100:128], img[:, 300:336, 300:336]]
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(3, 30, 34, generator=gen), torch.rand(3, 40, 28, generator=gen),
            torch.rand(3, 36, 36, generator=gen)]


def test_packed_adam_matches_torch_adam_per_slot():
    # Two layers of different shapes, both views of the pack's (K, P) rows: each slot must move as
    # torch's Adam moves that slot's own two tensors, and a slot that sits out a step must not move.
    from zssr_batch.pack.packed import PackedNets

    torch.manual_seed(0)
    nets = PackedNets(3, 2, 2, 4)
    with torch.no_grad():
        nets.flat.copy_(torch.randn(nets.flat.shape))
    lrs = (1e-3, 1e-4, 5e-3)
    ref = [[torch.nn.Parameter(w[i].detach().clone()) for w in nets.weights] for i in range(3)]
    opts = [torch.optim.Adam(ps, lr=lr) for ps, lr in zip(ref, lrs)]
    popt = PackedAdam(nets.flat)
    for step in range(7):
        grads = [torch.randn(w.shape) for w in nets.weights]
        active = torch.tensor([True, step % 2 == 0, step < 4])
        for i in range(3):
            if active[i]:
                for p, g in zip(ref[i], grads):
                    p.grad = g[i].clone()
                opts[i].step()
        popt.step([g.clone() for g in grads], torch.tensor(lrs, dtype=torch.float64), active)
    for i in range(3):
        for p, w in zip(ref[i], nets.weights):
            assert torch.allclose(w[i].detach(), p.detach(), atol=1e-6), i


def test_packed_fits_equal_single_fits_with_their_own_streams_and_stopping_points():
    # 20 steps (the check), one image stopping early so that a later image
    # takes its slot mid-run (continuous batching), seeds differing per image.
    cfgs = [resolve("fast", overrides={"max_iters": 20, "crop": 24, "width": 16, "seed": 3}),
            resolve("fast", overrides={"max_iters": 9, "crop": 24, "width": 16, "seed": 4}),
            resolve("fast", overrides={"max_iters": 20, "crop": 24, "width": 16, "seed": 5, "test_every": 5})]
    imgs = _crops()
    jobs = [Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(imgs, cfgs))]
    packed = dict(fit_packed(jobs, k=2))
    assert sorted(packed) == [0, 1, 2]
    for i, (img, cfg) in enumerate(zip(imgs, cfgs)):
        alone = super_resolve(img, cfg)
        p = packed[i]
        assert p.iterations == alone.iterations == cfg.max_iters
        for name, w in alone.state_dict.items():
            assert torch.allclose(p.state_dict[name], w, atol=2e-5, rtol=1e-4), (i, name)
        assert np.allclose(p.log.loss, alone.log.loss, atol=1e-5)
        assert p.log.test_steps == alone.log.test_steps
        assert torch.allclose(p.output, alone.output, atol=1e-4)


def test_a_pack_trains_what_it_has_while_its_next_images_are_not_ready():
    # A source with nothing ready (None: images still decoding) at the start, between images and
    # while the first finishes: the pack starts with the one image it has, trains it alone, and takes
    # the others as they come, never waiting while a slot trains. Every fit equals fitting the image
    # alone, to the float tolerance of the test above (other slots live beside it, other float order).
    cfgs = [resolve("fast", overrides={"max_iters": n, "crop": 24, "width": 16, "seed": 3 + i})
            for i, n in enumerate((8, 14, 11))]
    jobs = [Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(_crops(), cfgs))]
    offered: list = []

    stats: dict = {}

    def slow_source():
        for x in [None, None, jobs[0], None, None, None, None, None, jobs[1]] + [None] * 6 + [jobs[2]]:
            offered.append((x.key if x is not None else None, stats["steps"]))  # the pack's steps so far
            yield x

    slow = dict(fit_packed(slow_source(), k=2, stats=stats))
    assert sorted(slow) == [0, 1, 2] and len(offered) == 16
    # The source is asked once a step while a slot is empty. The two Nones before the first image came
    # while nothing trained; then the first image trained alone for 5 steps before the second came;
    # the first finished after its 8 steps, and its slot was offered a job at the end of that step and
    # then at each step until the third came 6 offers later.
    taken = {key: at for key, at in offered if key is not None}
    assert taken == {0: 0, 1: 5, 2: 13}
    assert stats["steps"] == 13 + 11 and stats["live_slot_steps"] == 8 + 14 + 11
    for job in jobs:
        alone, p = super_resolve(job.image, job.cfg), slow[job.key]
        assert p.iterations == alone.iterations == job.cfg.max_iters
        for name, w in alone.state_dict.items():
            assert torch.allclose(p.state_dict[name], w, atol=2e-5, rtol=1e-4), (job.key, name)
        assert np.allclose(p.log.loss, alone.log.loss, atol=1e-5)
        assert torch.allclose(p.output, alone.output, atol=1e-4)


def test_packed_fits_follow_the_learning_rate_rule_and_noise_of_each_image():
    # The rule reads each image's test errors lazily in a pack; cuts and stops must land on the
    # same steps as alone. Noise exercises the per-image noise draws interleaved with the pairs.
    rule = {"max_iters": 40, "crop": 24, "width": 16, "test_every": 2, "lr_check_every": 3, "min_iters": 4,
            "lr_slope_range": 8, "noise_std": 0.02, "learning_rate": 0.01}
    cfgs = [resolve("fast", overrides={**rule, "seed": s}) for s in (7, 8, 9)]
    imgs = _crops()
    packed = dict(fit_packed([Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(imgs, cfgs))], k=2))
    cut = 0
    for i, (img, cfg) in enumerate(zip(imgs, cfgs)):
        alone = super_resolve(img, cfg)
        p = packed[i]
        cut += len(alone.log.lr_changes)
        assert p.log.lr_changes == alone.log.lr_changes and p.iterations == alone.iterations
        assert np.allclose(p.log.rec_mse, alone.log.rec_mse, rtol=1e-4, atol=1e-7)
        for name, w in alone.state_dict.items():
            assert torch.allclose(p.state_dict[name], w, atol=2e-5, rtol=1e-4), (i, name)
        assert torch.allclose(p.output, alone.output, atol=1e-4)
    assert cut > 0  # the rule did act, so the lazy reads were exercised


def test_a_fit_that_diverges_stops_at_once_alone_and_in_a_pack():
    # The authors' rule never cuts on a NaN slope: without a stop, a diverged fit trains on to
    # max_iters, in a pack holding its slot all that while. Alone it stops after the first test that
    # comes back NaN; in a pack at the next look at its tests (the pack reads them lazily).
    rule = {"max_iters": 200, "crop": 24, "width": 16, "test_every": 2, "lr_check_every": 3, "min_iters": 4,
            "lr_slope_range": 8}
    bad = resolve("fast", overrides={**rule, "seed": 7, "learning_rate": 1e10})
    good = resolve("fast", overrides={**rule, "seed": 8, "max_iters": 30})
    imgs = _crops()
    alone = super_resolve(imgs[0], bad)
    first_nan = next(i for i, e in enumerate(alone.log.rec_mse) if not np.isfinite(e))
    assert alone.iterations == alone.log.test_steps[first_nan] + 1 < 20
    assert not torch.isfinite(alone.output).all()
    packed = dict(fit_packed([Job(0, imgs[0], bad), Job(1, imgs[1], good)], k=2))
    assert packed[0].iterations < 20 and not torch.isfinite(packed[0].output).all()
    fine = super_resolve(imgs[1], good)  # the other slot trains on as if alone
    assert packed[1].iterations == fine.iterations and np.allclose(packed[1].log.loss, fine.log.loss, atol=1e-5)


@pytest.mark.parametrize("lag", [3, 10_000])
def test_tests_and_outputs_read_their_own_copies_however_late_they_run(monkeypatch, lag):
    # On a GPU a pack can run its tests and outputs on a second stream, so they may run steps after
    # the host issued them, while the slot trains on or holds the next image. Here each job runs
    # `lag` steps late (10,000: only when its result is read): every result must be bit for bit
    # what it is when jobs run at once. Noise checks the test's draws keep their turn in the stream;
    # the third image takes the first one's slot, so an output that read the live slot would get
    # the wrong image or weights.
    from zssr_batch.pack import packed

    rule = {"max_iters": 30, "crop": 24, "width": 16, "test_every": 2, "lr_check_every": 3, "min_iters": 4,
            "lr_slope_range": 8, "noise_std": 0.02, "learning_rate": 0.01}
    cfgs = [resolve("fast", overrides={**rule, "seed": s, "max_iters": n}) for s, n in ((7, 12), (8, 30), (9, 30))]
    imgs = _crops()

    def fit() -> dict:
        return dict(fit_packed([Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(imgs, cfgs))], k=2))

    now = fit()
    monkeypatch.setattr(packed._Beside, "lag", lag)
    late = fit()
    assert sorted(late) == [0, 1, 2]
    assert any(r.log.lr_changes for r in now.values())  # the rule read the tests and acted on them
    for i in now:
        assert late[i].log.rec_mse == now[i].log.rec_mse and late[i].log.lr_changes == now[i].log.lr_changes, i
        assert late[i].log.loss == now[i].log.loss, i
        assert torch.equal(late[i].output, now[i].output), i


def _record_eagerly(monkeypatch) -> None:
    """On a GPU the step is a recorded graph over every position; finished positions ride along
    masked. Here only the capture itself has an eager stand-in: the recording's warm-up steps run
    as they do on a GPU (no slot active, every position computed), the capture runs the step once
    more, and each replay runs that same full-pack step, so a draining pack's bookkeeping, and
    that recording changes no slot, are checked on a CPU."""
    from zssr_batch.pack import packed

    class Replay:
        def __init__(self, step, rows):
            self.step, self.rows = step, rows

        def replay(self):
            self.rows.copy_(self.step())

    def capture(step, device):
        rows = step()
        return Replay(step, rows), rows

    monkeypatch.setattr(packed, "_capture", capture)
    monkeypatch.setattr(packed, "_can_record", lambda device: True)


def test_recording_a_pack_before_its_first_draws_changes_no_slot(monkeypatch):
    # On the H100 (2026-11-27) every image placed before a pack's first recording came out NaN: the
    # warm-up steps ran before any father was drawn, on all-zero maps, and the NaN they made reached
    # the resting rows' Adam moments. A recording must leave weights and optimizer state as they were.
    from zssr_batch.pack import packed

    _record_eagerly(monkeypatch)
    cfg = resolve("fast", overrides={"crop": 16, "width": 8})
    img = torch.rand(3, 30, 26, generator=torch.Generator().manual_seed(0))
    pack = packed._Pack(3, Job(0, img, cfg), torch.device("cpu"), PackOptions())
    for i in range(2):  # the third slot stays empty: its source image is still decoding
        pack.place(i, Job(i, img, cfg), torch.Generator().manual_seed(i))
    before = [t.clone() for t in (pack.nets.flat, pack.opt.m, pack.opt.v, pack.opt.t)]
    pack.record()
    assert pack.graph is not None and pack.recordings == 1
    for t, b in zip((pack.nets.flat, pack.opt.m, pack.opt.v, pack.opt.t), before):
        assert torch.equal(t, b)
    assert pack.active.tolist() == [True, True, False]


def _drain(iters: tuple[int, ...], k: int) -> tuple[dict, dict]:
    cfgs = [resolve("fast", overrides={"max_iters": n, "crop": 24, "width": 16, "seed": 10 + i})
            for i, n in enumerate(iters)]
    gen = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 30 + 2 * (i % 4), 36 - 2 * (i % 4), generator=gen) for i in range(len(iters))]
    stats: dict = {}
    out = dict(fit_packed([Job(i, im, c) for i, (im, c) in enumerate(zip(imgs, cfgs))], k=k, stats=stats))
    for i, (img, cfg) in enumerate(zip(imgs, cfgs)):
        alone = super_resolve(img, cfg)
        assert out[i].iterations == cfg.max_iters
        # Losses step by step: a slot given another's weights, Adam state, rate or image after the
        # shrink would leave its curve at once. Weights are compared loosely on purpose: past ~7
        # steps Adam, whose early steps move every weight by about the learning rate whatever its
        # gradient's size, turns float noise in near-zero gradients into weight differences of up
        # to ~5e-3 over 20 steps (measured), with losses still equal to 1e-7; another slot's
        # weights would differ by ~0.1.
        assert np.allclose(out[i].log.loss, alone.log.loss, atol=1e-5), i
        assert torch.allclose(out[i].output, alone.output, atol=1e-3), i
        for name, w in alone.state_dict.items():
            assert torch.allclose(out[i].state_dict[name], w, atol=1e-2), (i, name)
    return out, stats


def test_a_draining_pack_shrinks_and_still_equals_single_fits(monkeypatch):
    _record_eagerly(monkeypatch)
    iters = (6, 20, 9, 14)
    _, stats = _drain(iters, 4)
    assert stats["replays"] == stats["steps"] == max(iters)
    # Four images ending at different steps: each end empties a quarter or more of what is left, so
    # the pack shrinks each time (4 -> 3 -> 2 -> 1) and computes no step of an empty position.
    assert stats["compactions"] == 3
    assert stats["slot_steps"] == stats["live_slot_steps"] == sum(iters)


def test_a_draining_pack_shrinks_to_recurring_sizes(monkeypatch):
    # 12 -> 10 when 9 are live (one empty position rides along: sizes come from COMPACT_SIZES, so
    # that they recur from batch to batch), then, each time the live slots fall to 90% of the
    # positions or below, 7, 6, 5, 4, 3, 2, 1. Slot-steps: 12x3 + 10x3 + 7x2 + 6 + 5 + 4 + 3 + 2 + 1
    # = 101 for 98 live ones.
    _record_eagerly(monkeypatch)
    iters = (3, 3, 3, 6, 6, 8, 9, 10, 11, 12, 13, 14)
    _, stats = _drain(iters, 12)
    assert stats["compactions"] == 8
    assert stats["live_slot_steps"] == sum(iters) == 98 and stats["slot_steps"] == 101


def test_the_device_clock_charges_each_phase_of_a_pack_its_own_time(monkeypatch):
    # On a CPU every op is done when the host moves on, so an "event" stamped with the host's clock
    # marks the device's timeline exactly: the clock must then split the whole loop among its phases.
    import time

    from zssr_batch.pack import packed

    class Stamp:
        def __init__(self):
            self.t = time.perf_counter()

        def query(self):
            return True

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 1000 * (end.t - self.t)

    _record_eagerly(monkeypatch)
    init = packed._DeviceClock.__init__
    monkeypatch.setattr(packed._DeviceClock, "__init__", lambda self, totals, _: init(self, totals, Stamp))
    cfgs = [resolve("fast", overrides={"max_iters": n, "crop": 24, "width": 16, "lr_schedule": "zssr",
                                       "test_every": 5}) for n in (4, 12, 12)]
    imgs = [torch.rand(3, 30, 34) for _ in cfgs]
    stats: dict = {}
    t0 = time.perf_counter()
    out = dict(fit_packed([Job(i, im, c) for i, (im, c) in enumerate(zip(imgs, cfgs))], k=2, stats=stats))
    wall = time.perf_counter() - t0
    assert len(out) == 3
    device = {k[7:-2]: v for k, v in stats.items() if k.startswith("device_")}
    # fill (3 images), record (the first step, then again after the pack compacts), train, test
    # (steps 0, 5, 10 of each image), finish (3 outputs), compact (one image left of two)
    assert set(device) == {"fill", "record", "train", "test", "finish", "compact"}, device
    assert all(v > 0 for v in device.values()), device
    # the phases tile the loop: together all of it but the set-up before the first image is placed
    assert 0.9 * wall < sum(device.values()) <= wall, (device, wall)
    # an output's ensemble (8 passes of the whole image) outweighs a training step on a 24-pixel crop
    assert device["finish"] / 3 > device["train"] / stats["steps"]


def small_pack():
    """Three small networks drawn from a fixed stream, and an input for two of them (slots 2 and 0)."""
    from zssr_batch.pack.packed import PackedNets

    gen = torch.Generator().manual_seed(2)
    nets = PackedNets(3, 3, 4, 8)
    for s in range(3):
        nets.init_slot(s, 0.5, gen)
    return nets, torch.rand(2, 3, 20, 18, generator=gen), torch.tensor([2, 0]), gen


def test_every_convolution_formulation_trains_the_same_networks():
    # 'bmm' (im2col + one batched product per layer), 'split' (weight gradients as nine shifted
    # batched products) and pad_thin (3-channel ends padded to 8) are other ways of computing the
    # same K networks: outputs and weight gradients must agree to float rounding (sums in another
    # order: 1e-6 on outputs of ~1, 1e-5 relative on gradients), in both memory layouts.
    from zssr_batch.pack.packed import PackOptions

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


_TRITON_CHECK = """
import json, torch, numpy as np
from test_packed import small_pack
from zssr_batch.config import resolve
from zssr_batch.pack.triton_conv import conv3x3, tap_major
from zssr_batch.pack.packed import Job, PackOptions, fit_packed
nets, x, slots, gen = small_pack()
ref = nets(x, slots)
g_ref = torch.autograd.grad(ref.square().sum(), list(nets.weights))
res = {"out": 0.0, "grad": 0.0}
from zssr_batch.pack import triton_conv as conv3x3_triton
seen, real = [], (conv3x3_triton.conv3x3, conv3x3_triton.weight_grad)
def conv_seen(x, *a, **k):
    seen.append(x.is_contiguous(memory_format=torch.channels_last))
    return real[0](x, *a, **k)
def wgrad_seen(x, gy, *a):
    seen.extend(t.is_contiguous(memory_format=torch.channels_last) for t in (x, gy))
    return real[1](x, gy, *a)
for layout in (False, True):
    seen.clear()
    conv3x3_triton.conv3x3, conv3x3_triton.weight_grad = conv_seen, wgrad_seen
    out = nets(x, slots, layout, "triton")
    g = torch.autograd.grad(out.square().sum(), list(nets.weights))
    conv3x3_triton.conv3x3, conv3x3_triton.weight_grad = real
    if layout:  # every activation and gradient the kernels read is channels-last, as the pack lays them out
        res["channels_last"] = all(seen) and len(seen) == 2 * len(nets.weights) - 1 + 2 * len(nets.weights)
    res["out"] = max(res["out"], float((out - ref).abs().max()))
    res["grad"] = max(res["grad"], max(float(((a - b).abs() / (b.abs().max() + 1e-12)).max()) for a, b in zip(g, g_ref)))
# half precision through the same kernel (bfloat16 has no NumPy type for the interpreter)
xh, wh = torch.randn(1, 2 * 16, 9, 11, generator=gen), torch.randn(2 * 8, 16, 3, 3, generator=gen)
exact = torch.nn.functional.conv2d(xh.half().float(), wh.half().float(), padding=1, groups=2)
res["half"] = float((conv3x3(xh.half(), tap_major(wh.half().view(2, 8, 16, 3, 3))).float() - exact).abs().max())
res["half_scale"] = float(exact.abs().max())
# the weight-gradient kernel with its pixels cut into several chunks (a 24x25 image)
from zssr_batch.pack.triton_conv import weight_grad
xw = torch.randn(1, 2 * 16, 24, 25, generator=gen)
ww = torch.randn(2 * 16, 16, 3, 3, generator=gen, requires_grad=True)
yw = torch.nn.functional.conv2d(xw, ww, padding=1, groups=2)
gyw = torch.randn(yw.shape, generator=gen)
ref_w, = torch.autograd.grad(yw, ww, gyw)
from zssr_batch.pack import triton_conv as conv3x3_triton
res["wgrad"] = 0.0
# 3 chunks of 64-pixel tiles, 5 of 32; one tap a program, or 2 or 4 (the last program's columns partly past tap 9)
for tiles in ((64, 4, 3, 1), (32, 4, 3, 1), (64, 4, 3, 2), (32, 4, 3, 4)):
    conv3x3_triton.TILES = {**conv3x3_triton.TILES, "wgrad": tiles}
    res["wgrad"] = max(res["wgrad"], float((weight_grad(xw, gyw, 2, ww.shape) - ref_w).abs().max() / ref_w.abs().max()))
# the pack's Adam as one kernel (the Triton way's) against PackedAdam's torch operations, rows sitting out
from zssr_batch.pack.packed import PackedAdam
flat_a = torch.randn(3, 2500, generator=gen)
flat_b = flat_a.clone()
opt_a, opt_b = PackedAdam(flat_a), PackedAdam(flat_b, fused=True)
for step in range(7):
    ga = torch.randn(3, 2500, generator=gen)
    active = torch.tensor([True, step % 2 == 0, step < 4])
    for opt in (opt_a, opt_b):
        opt.step([ga.clone()], torch.tensor([1e-3, 1e-4, 5e-3], dtype=torch.float64), active)
res["adam"] = max(float((a - b).abs().max()) for a, b in ((flat_a, flat_b), (opt_a.m, opt_b.m), (opt_a.v, opt_b.v)))
cfg = resolve("fast", overrides={"max_iters": 4, "crop": 16, "width": 8})
imgs = [torch.rand(3, 20, 22, generator=gen) for _ in range(2)]
a = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2))
b = dict(fit_packed([Job(i, im, cfg) for i, im in enumerate(imgs)], 2, options=PackOptions(conv="triton")))
res["loss"] = max(float(np.abs(np.array(a[i].log.loss) - np.array(b[i].log.loss)).max()) for i in range(2))
print(json.dumps(res))
"""


def test_the_triton_kernel_trains_the_same_networks():
    # conv="triton" (our kernels for the forward, input and weight gradients) must be the same
    # networks as cuDNN's grouped convolutions. Run by Triton's interpreter on this CPU, in a
    # fresh process (the interpreter is chosen when the kernel is defined): float32 to 1e-5 as
    # above; float16 to its rounding of the float32 sum (~1e-3 of the largest output).
    pytest.importorskip("triton", reason="triton is in the test extra: pip install -e '.[test]'")
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", _TRITON_CHECK], capture_output=True, text=True, timeout=300,
                         cwd=here, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["out"] < 1e-6 and res["grad"] < 1e-5 and res["wgrad"] < 1e-5, res
    assert res["adam"] < 1e-6, res  # as test_packed_adam_matches_torch_adam_per_slot: float rounding only
    # The kernels' loads are fast along channels: on an H100 an NCHW gradient reaching them cost 1 ms a step.
    assert res["channels_last"], res
    assert res["half"] < 2e-3 * res["half_scale"], res
    assert res["loss"] < 1e-5, res


def test_pack_size_follows_gpu_memory_and_image_size(monkeypatch, tmp_path):
    # The formula is host arithmetic on the free memory CUDA reports; here a 40 GiB card is pretended.
    from PIL import Image

    from zssr_batch.pack.size import memory_pack_size, plan_pack
    from zssr_batch.files.sources import WorkItem
    from zssr_batch.run.batch import largest_input

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 << 30, 80 << 30))
    cfg = resolve("paper")
    assert memory_pack_size(cfg, "cuda") == 128  # 100 MB a slot: memory is not what limits
    assert 100 <= memory_pack_size(cfg, "cuda", (160, 240)) <= 128  # BSD100 inputs barely count
    # 12-megapixel inputs: their 192 MB squares in the source buffer do (20 GiB, less 2 GiB for one
    # image's inference, over 101 + 192 MB a slot: 66)
    assert memory_pack_size(cfg, "cuda", (3000, 4000)) == 66
    Image.new("RGB", (400, 300)).save(tmp_path / "a.png")
    Image.new("RGB", (200, 100)).save(tmp_path / "b.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    items = [WorkItem(input=str(tmp_path / n), output="") for n in ("b.png", "bad.png", "a.png")]
    assert largest_input(items, cfg) == (300, 400)
    assert largest_input(items, cfg, degrade=True) == (150, 200)


def test_pack_size_is_the_measured_cheapest_per_image_within_memory(monkeypatch, tmp_path):
    from zssr_batch.pack import size as pack_size
    from zssr_batch.pack.size import choose_pack_size, memory_pack_size, plan_pack, time_pack_step
    from zssr_batch.pack.packed import PackOptions

    # The H200's figures (docs/BENCHMARKS.md): 32 slots cost 0.241 ms each, 100 cost 0.262.
    assert choose_pack_size({32: 7.72, 100: 26.23}) == 32
    assert choose_pack_size({16: 3.88, 32: 7.72}) == 16  # 0.5% dearer per slot: the smaller pack drains sooner
    assert choose_pack_size({64: 10.9, 100: 16.4}) == 100  # H100, Triton: 2.9% cheaper per slot at 100
    assert choose_pack_size({16: 5.0, 32: 7.72, 64: 14.0}) == 64
    # The probe times the real pack step; on this CPU, eight small networks cost more than one.
    cfg = resolve("fast", overrides={"crop": 32, "width": 16})
    one, eight = (time_pack_step(cfg, "cpu", k, repeats=3) for k in (1, 8))
    assert 0 < one < eight
    # On a GPU: a pretended card. At 32 fits, split weight gradients with padded thin ends cost 0.2 ms
    # a slot against 0.3 for the rest (cuDNN tuning: 0.21, within 3%, so not worth turning on); that
    # way then costs 0.15 a slot at 64 and 0.2 elsewhere. Measured once per process.
    calls = []

    def card(k, o):
        if (o.conv, o.pad_thin) != ("split", True):
            return 0.3 * k
        return (0.21 if o.tune else 0.2) * k if k == 32 else (0.15 if k == 64 else 0.2) * k

    def fake_step(cfg, device, k, options, image, repeats=10):
        calls.append((k, options, tuple(image.shape)))
        return card(k, options)

    monkeypatch.setattr(pack_size, "time_pack_step", fake_step)
    monkeypatch.setattr(pack_size, "_step_ms", {})
    monkeypatch.setattr(pack_size, "triton_available", lambda: False)  # the Triton way: at the end
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Pretend H100")
    monkeypatch.setenv("ZSSR_BATCH_CACHE", str(tmp_path / "cache"))
    paper = resolve("paper")
    k, opts = plan_pack(paper, "cuda", (160, 240), images=100)
    assert (k, opts) == (64, PackOptions(conv="split", pad_thin=True))
    tried = [(o.conv, o.pad_thin, o.tune) for k_, o, _ in calls if k_ == 32]
    assert sorted(tried) == sorted((c, p, t) for c in ("grouped", "split") for p in (False, True) for t in (False, True))
    sizes = sorted(k_ for k_, o, _ in calls if o == opts)  # 128: more than the batch; only the way kept
    assert sizes == [16, 32, 64, 100] and len(calls) == 8 + 3 and calls[0][2] == (3, 240, 240)
    assert plan_pack(paper, "cuda", (160, 240), images=100)[0] == 64 and len(calls) == 11  # the timings were kept
    assert plan_pack(paper, "cuda", (160, 240), images=10) == (10, opts)  # no size the batch cannot fill
    assert sorted(c[0] for c in calls[11:]) == [10] * 8
    assert plan_pack(resolve("gradual-x2"), "cuda", (160, 240), images=100) == (4, PackOptions())  # no probe
    assert len(calls) == 19
    # 24-megapixel inputs: memory caps the pack below 64, so 64 is not tried
    k, opts = plan_pack(paper, "cuda", (4000, 6000), images=100)
    cap = memory_pack_size(paper, "cuda", (4000, 6000))
    assert 32 < cap < 64 and max(c[0] for c in calls[19:]) == cap and k == 16  # 0.2 a slot but at 64: the smallest
    # The timings outlive the process, per card model and software: a new actor on this machine
    # times nothing; another card model times again.
    kept = json.loads((tmp_path / "cache" / "pack-steps.json").read_text())
    assert len(kept) == len(calls) == 8 + 3 + 8 + 1  # the ways at 32 and at 10, the sizes, and the cap 36
    monkeypatch.setattr(pack_size, "_step_ms", {})
    assert plan_pack(paper, "cuda", (160, 240), images=100) == (64, PackOptions(conv="split", pad_thin=True))
    assert len(calls) == 20
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Pretend H200")
    monkeypatch.setattr(pack_size, "_step_ms", {})
    assert plan_pack(paper, "cuda", (160, 240), images=100)[0] == 64 and len(calls) == 31
    # Within SLACK the simplest way wins; a way whose timing fails is no choice (a one-line warning,
    # none for running out of memory, and not kept on disk); knobs set away from their defaults are
    # not varied.
    monkeypatch.setenv("ZSSR_BATCH_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(pack_size, "_step_ms", {})

    def tuned_fails(cfg, device, k, options, image, repeats=10):
        if options.tune:
            raise torch.cuda.OutOfMemoryError("cuDNN workspace") if options.pad_thin else RuntimeError("cuDNN error")
        return 0.3 * k if options.conv == "grouped" and not options.pad_thin else 0.295 * k

    monkeypatch.setattr(pack_size, "time_pack_step", tuned_fails)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.warns(UserWarning) as caught:
        assert plan_pack(paper, "cuda", (160, 240), images=100) == (16, PackOptions())
    assert [str(w.message) for w in caught] == [f"zssr-batch: timing a pack of 32 ({conv} convolutions, cuDNN-tuned) "
                                                "failed: cuDNN error" for conv in ("grouped", "split")]
    assert not any('"tune": true' in key for key in json.loads((tmp_path / "cache2" / "pack-steps.json").read_text()))
    monkeypatch.setattr(pack_size, "time_pack_step", fake_step)
    monkeypatch.setattr(pack_size, "_step_ms", {})
    calls.clear()
    k, opts = plan_pack(paper, "cuda", (160, 240), images=100, options=PackOptions(tune=True, conv="split"))
    assert (k, opts) == (64, PackOptions(tune=True, conv="split", pad_thin=True))
    assert all(o.tune and o.conv == "split" for _, o, _ in calls)
    # Where Triton runs, its kernel is a ninth way (untuned, unpadded: they do not apply to it), and
    # wins here at 0.1 ms a slot; not tried when the caller fixed another way.
    assert pack_size.candidates(PackOptions(), triton=True)[-1] == PackOptions(conv="triton")
    assert all(o.conv != "triton" for o in pack_size.candidates(PackOptions(tune=True), triton=True))
    monkeypatch.setattr(pack_size, "triton_available", lambda: True)
    monkeypatch.setattr(pack_size, "time_pack_step",
                        lambda cfg, device, k, options, image, repeats=10: (0.1 if options.conv == "triton" else 0.3) * k)
    assert plan_pack(paper, "cuda", (160, 240), images=100) == (16, PackOptions(conv="triton"))
    # The Triton way's timings are kept per tile shape: other tiles (a new default, or the ones a
    # benchmark sets) are timed again, the other ways not.
    tri = pytest.importorskip("zssr_batch.pack.triton_conv", reason="triton is in the test extra")
    timed = []

    def count(cfg, device, k, options, image, repeats=10):
        timed.append(options.conv)
        return (0.1 if options.conv == "triton" else 0.3) * k

    monkeypatch.setattr(pack_size, "time_pack_step", count)
    monkeypatch.setattr(pack_size, "_step_ms", {})
    assert plan_pack(paper, "cuda", (160, 240), images=100) == (16, PackOptions(conv="triton")) and timed == []
    monkeypatch.setattr(tri, "TILES", {**tri.TILES, "conv": (64, 4, 4, "")})
    monkeypatch.setattr(pack_size, "_step_ms", {})
    assert plan_pack(paper, "cuda", (160, 240), images=100) == (16, PackOptions(conv="triton"))
    assert timed and set(timed) == {"triton"}


def test_a_cpu_packs_only_while_a_slot_stays_in_cache():
    # Measured on this 2-core CPU (docs/BENCHMARKS.md): packs of 2-4 win up to crop 64 at width 64,
    # one fit at a time wins at 96 and 128. Nothing is timed on a CPU.
    from zssr_batch.pack.size import plan_pack
    from zssr_batch.pack.packed import PackOptions

    assert plan_pack(resolve("paper"), "cpu", images=16) == (1, PackOptions())
    assert plan_pack(resolve("paper", overrides={"crop": 96}), "cpu", images=16)[0] == 1
    assert plan_pack(resolve("paper", overrides={"crop": 64}), "cpu", images=16) == (4, PackOptions(pad_thin=True))
    assert plan_pack(resolve("fast"), "cpu", images=3) == (3, PackOptions(pad_thin=True))
    assert plan_pack(resolve("paper", overrides={"crop": 128, "width": 16}), "cpu")[0] == 4


def test_unpackable_jobs_are_fitted_alone():
    cfg = resolve("fast", overrides={"max_iters": 3, "crop": 24, "width": 8})
    small = torch.rand(3, 16, 20)  # smaller than the crop
    gray = torch.rand(1, 30, 30)
    rgb = torch.rand(3, 30, 30)
    out = dict(fit_packed([Job("rgb", rgb, cfg), Job("small", small, cfg), Job("gray", gray, cfg)], k=2))
    assert out["small"].output.shape == (3, 32, 40) and out["gray"].output.shape == (1, 60, 60)
    assert torch.equal(out["gray"].output, super_resolve(gray, cfg).output)


def test_a_closed_packed_call_stops_its_pack(tmp_path):
    # Closing run_packed's generator (a cancelled actor call) must stop the pack thread at once, not
    # leave it fitting the images in its slots for nobody beside the actor's next call.
    import threading
    import time
    from PIL import Image

    from zssr_batch.files.sources import ScanOptions, scan_folder
    from zssr_batch.run.batch import run_packed

    gen = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(gen.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    items = [it for it in scan_folder(tmp_path, ScanOptions(output_dir=tmp_path / "out"))]
    tiny = {"crop": 16, "width": 8, "back_projection_iters": (1,)}
    # 'halving' never ends a fit early, so the long ones would train all 100,000 steps
    cfgs = [resolve("fast", overrides={**tiny, "lr_schedule": "halving", "max_iters": 3 if i == 0 else 100_000})
            for i in range(3)]
    rows = run_packed(items, cfgs, "cpu", pack=2)
    i, first = next(rows)  # the short fit's row; the two long ones are still training
    assert first["status"] == "ok" and i == 0
    rows.close()
    deadline = time.monotonic() + 10
    while any(t.name == "zssr-pack" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "zssr-pack" for t in threading.enumerate())  # 100,000 steps would take minutes
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png") == ["0.png"]


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
