"""The device side of a pack: recording its step changes no slot, a draining pack shrinks and still
equals single fits, and the benchmarks' device clock charges each phase its own time."""

from __future__ import annotations

import numpy as np
import torch

from pack_helpers import record_eagerly
from zssr_batch.config import resolve
from zssr_batch.engine.super_resolve import super_resolve
from zssr_batch.pack.device import DevicePack
from zssr_batch.pack.jobs import Job
from zssr_batch.pack.loop import fit_packed
from zssr_batch.pack.options import PackOptions



def test_recording_a_pack_before_its_first_draws_changes_no_slot(monkeypatch):
    # On the H100 (2026-11-27) every image placed before a pack's first recording came out NaN: the
    # warm-up steps ran before any father was drawn, on all-zero maps, and the NaN they made reached
    # the resting rows' Adam moments. A recording must leave weights and optimizer state as they were.
    record_eagerly(monkeypatch)
    cfg = resolve("fast", overrides={"crop": 16, "width": 8})
    img = torch.rand(3, 30, 26, generator=torch.Generator().manual_seed(0))
    pack = DevicePack(3, Job(0, img, cfg), torch.device("cpu"), PackOptions())
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
    record_eagerly(monkeypatch)
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
    record_eagerly(monkeypatch)
    iters = (3, 3, 3, 6, 6, 8, 9, 10, 11, 12, 13, 14)
    _, stats = _drain(iters, 12)
    assert stats["compactions"] == 8
    assert stats["live_slot_steps"] == sum(iters) == 98 and stats["slot_steps"] == 101


def test_the_device_clock_charges_each_phase_of_a_pack_its_own_time(monkeypatch):
    # On a CPU every op is done when the host moves on, so an "event" stamped with the host's clock
    # marks the device's timeline exactly: the clock must then split the whole loop among its phases.
    import time

    from zssr_batch.pack import instruments

    class Stamp:
        def __init__(self):
            self.t = time.perf_counter()

        def query(self):
            return True

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 1000 * (end.t - self.t)

    record_eagerly(monkeypatch)
    # Each output's work lasts at least PAUSE (a sleep in it): a lower bound the machine's load
    # cannot break, so which phase it is charged to can be asserted (a ratio of two phases' times
    # once was, and failed on a busy machine).
    from zssr_batch.pack import loop

    pause, output_job = 0.05, loop._output_job

    def slow_output(*args, **kwargs):
        time.sleep(pause)
        return output_job(*args, **kwargs)

    monkeypatch.setattr(loop, "_output_job", slow_output)
    init = instruments.DeviceClock.__init__
    monkeypatch.setattr(instruments.DeviceClock, "__init__", lambda self, totals, _: init(self, totals, Stamp))
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
    # the outputs' time is charged to 'finish', not to the steps around them
    assert device["finish"] >= 3 * pause, device
