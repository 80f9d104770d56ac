"""How many fits to pack and how: what GPU memory holds, what the probe measures, and a CPU's rule."""

from __future__ import annotations

import json

import pytest
import torch

from zssr_batch.config import resolve
from zssr_batch.pack.options import PackOptions



def test_pack_size_follows_gpu_memory_and_image_size(monkeypatch, tmp_path):
    # The formula is host arithmetic on the free memory CUDA reports; here a 40 GiB card is pretended.
    from PIL import Image

    from zssr_batch.pack.size import memory_pack_size
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
    # The H200's figures (docs/BENCHMARKS.md): 32 slots cost 0.241 ms each, 100 cost 0.262.
    assert choose_pack_size({32: 7.72, 100: 26.23}) == 32
    assert choose_pack_size({16: 3.88, 32: 7.72}) == 16  # 0.5% dearer per slot: the smaller pack drains sooner
    assert choose_pack_size({64: 10.9, 100: 16.4}) == 100  # H100, Triton: 2.9% cheaper per slot at 100
    assert choose_pack_size({16: 5.0, 32: 7.72, 64: 14.0}) == 64
    # The probe times the real pack step (which of two sizes is dearer is a benchmark's question:
    # on a shared CPU a busy moment can reorder two timings).
    cfg = resolve("fast", overrides={"crop": 32, "width": 16})
    one, eight = (time_pack_step(cfg, "cpu", k, repeats=3) for k in (1, 8))
    assert 0 < one < float("inf") and 0 < eight < float("inf")
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
    untrained = resolve("paper", overrides={"max_iters": 0})  # fitted alone: no probe
    assert plan_pack(untrained, "cuda", (160, 240), images=100) == (4, PackOptions())
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
    assert plan_pack(resolve("paper"), "cpu", images=16) == (1, PackOptions())
    assert plan_pack(resolve("paper", overrides={"crop": 96}), "cpu", images=16)[0] == 1
    assert plan_pack(resolve("paper", overrides={"crop": 64}), "cpu", images=16) == (4, PackOptions(pad_thin=True))
    assert plan_pack(resolve("fast"), "cpu", images=3) == (3, PackOptions(pad_thin=True))
    assert plan_pack(resolve("paper", overrides={"crop": 128, "width": 16}), "cpu")[0] == 4
