"""Packed fits (K networks in grouped convolutions) equal fitting each image alone: with their own
streams, stopping points, learning-rate rules and noise, slots refilled as images end or arrive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pack_helpers import crops
from zssr_batch.config import resolve
from zssr_batch.engine.super_resolve import super_resolve
from zssr_batch.pack.jobs import Job
from zssr_batch.pack.loop import fit_packed



def test_packed_fits_equal_single_fits_with_their_own_streams_and_stopping_points():
    # 20 steps (the check), one image stopping early so that a later image
    # takes its slot mid-run (continuous batching), seeds differing per image.
    cfgs = [resolve("fast", overrides={"max_iters": 20, "crop": 24, "width": 16, "seed": 3}),
            resolve("fast", overrides={"max_iters": 9, "crop": 24, "width": 16, "seed": 4}),
            resolve("fast", overrides={"max_iters": 20, "crop": 24, "width": 16, "seed": 5, "test_every": 5})]
    imgs = crops()
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
    jobs = [Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(crops(), cfgs))]
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
    imgs = crops()
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
    imgs = crops()
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
    # On a GPU a pack can run its reconstruction checks and outputs on a second stream, so they may run steps after
    # the host issued them, while the slot trains on or holds the next image. Here each job runs
    # `lag` steps late (10,000: only when its result is read): every result must be bit for bit
    # what it is when jobs run at once. Noise checks the test's draws keep their turn in the stream;
    # the third image takes the first one's slot, so an output that read the live slot would get
    # the wrong image or weights.
    from zssr_batch.pack import beside

    rule = {"max_iters": 30, "crop": 24, "width": 16, "test_every": 2, "lr_check_every": 3, "min_iters": 4,
            "lr_slope_range": 8, "noise_std": 0.02, "learning_rate": 0.01}
    cfgs = [resolve("fast", overrides={**rule, "seed": s, "max_iters": n}) for s, n in ((7, 12), (8, 30), (9, 30))]
    imgs = crops()

    def fit() -> dict:
        return dict(fit_packed([Job(i, img, cfg) for i, (img, cfg) in enumerate(zip(imgs, cfgs))], k=2))

    now = fit()
    monkeypatch.setattr(beside.InLine, "lag", lag)
    late = fit()
    assert sorted(late) == [0, 1, 2]
    assert any(r.log.lr_changes for r in now.values())  # the rule read the tests and acted on them
    for i in now:
        assert late[i].log.rec_mse == now[i].log.rec_mse and late[i].log.lr_changes == now[i].log.lr_changes, i
        assert late[i].log.loss == now[i].log.loss, i
        assert torch.equal(late[i].output, now[i].output), i


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
    items = list(scan_folder(tmp_path, ScanOptions(output_dir=tmp_path / "out")))
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
