"""How many fits to pack on a device, and how to run them: what its memory holds, then what it measures.

Memory gives the ceiling. Below it, a GPU's pack is measured, on synthetic
images through the real recorded step. First the ways of running the
convolutions (``PackOptions``: cuDNN's grouped convolutions or split weight
gradients, thin ends padded or not, cuDNN timing its own algorithms or not,
or our Triton kernel; ``pack.conv``) are timed at one
pack size, and the simplest within a few percent of the fastest is kept:
grouped convolutions bound a pack, and which of their kernels is fastest
depends on the card and the cuDNN release. Then that way is timed at a few
sizes, and the size that trains the most images per second wins, the
smaller one when two are within 1% (a smaller pack drains sooner
at the end of a batch and leaves memory to inference). A bigger pack is not
always cheaper per slot (docs/BENCHMARKS.md, "Why the pack's defaults are what they are"). The timings are kept for the life of the process, and on disk
(``step_cache``) for later runs on the same card model, torch and cuDNN: an
actor measures once, a machine once per card and software.

A CPU is not timed (its timings are too noisy to choose by) but follows a
rule measured on this project's 2-core machine: packing pays only while one
layer's activations of every slot stay in cache.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..config import FitConfig
from .conv import triton_available
from .device import full_pack, source_side
from .jobs import packable
from .options import PackOptions

# On a CPU a pack of 2-4 trains faster per image than one fit while a slot's layer activations
# (width x crop^2 floats) stay in cache, ~1 MiB, and slower beyond; padding the thin ends helps packs
# there (docs/BENCHMARKS.md, "Why the pack's defaults are what they are").
CPU_PACK = 4
CPU_SLOT_BYTES = 1 << 20
PROBE_AT = 32  # the pack size at which the ways of running a pack are compared
MAX_PACK = 128
PROBE_SIZES = (16, 32, 64, 128)
SLACK = 0.03  # ways this close count as equal, and the simplest wins (the timing noise of 10 replays is ~1%)
# Sizes this close count as equal, and the smaller wins (it drains sooner and leaves memory to inference).
# Only just above the noise: a bigger pack a few percent cheaper per slot trains a batch faster even
# though it drains later (benchmarks/drain_model.py; docs/BENCHMARKS.md, as above).
SIZE_SLACK = 0.01

_step_ms: dict[tuple, float] = {}  # (device, network, way (_way), pack size) -> ms per full-pack step


def memory_pack_size(cfg: FitConfig, device: torch.device | str, largest: tuple[int, int] | None = None,
                     channels: int = 3) -> int:
    """The most fits half of a GPU's free memory holds, at most ``MAX_PACK``.

    Per slot: the training step's activations kept for backward (~3x depth x width x crop^2
    floats with gradients and pair buffers) and the slot's sources in the pack's source buffer
    (its image; in a gradual fit also its outputs of the steps before the last, each in a square
    of the largest one's side), sized by ``largest`` (h, w), the largest input. One image's
    inference at a time comes off the top: its 8 orientations at the output size, two hidden
    activations each.
    """
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_slot = 3 * cfg.depth * cfg.width * cfg.crop**2 * 4
    inference = 0
    if largest is not None:
        side = source_side(largest, cfg)
        per_slot += len(cfg.steps) * channels * side * side * 4  # the slot's squares in the source buffer
        out_px = largest[0] * largest[1] * cfg.scale[0] * cfg.scale[1]
        inference = int(min(8 * 2 * cfg.width * out_px * 4, 2 << 30))  # MemoryPlan caps a batch at 2 GiB
    return int(max(1, min(MAX_PACK, (free // 2 - inference) // per_slot)))


def ms_per_call(work: Callable[[], Any], repeats: int, device: torch.device | str, warmup: int = 1) -> float:
    """Milliseconds per call of ``work`` after ``warmup`` calls, the device's queue drained before and after."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        work()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - t0) / repeats * 1e3


def time_pack_step(cfg: FitConfig, device: torch.device | str, k: int, options: PackOptions = PackOptions(),
                   image: torch.Tensor | None = None, repeats: int = 10) -> float:
    """Milliseconds per training step of a full pack of ``k`` (pairs to Adam, recorded as a graph where
    ``options`` say so), with no host work between steps: what the device alone needs."""
    device = torch.device(device)
    pack, live = full_pack(cfg, device, k, options, image)
    ms = ms_per_call(lambda: pack.step(live), repeats, device, warmup=3)  # the recording, and the first replays
    del pack
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ms


def choose_pack_size(step_ms: dict[int, float], slack: float = SIZE_SLACK) -> int:
    """The smallest pack whose time per slot is within ``slack`` of the cheapest."""
    per_slot = {k: ms / k for k, ms in step_ms.items()}
    best = min(per_slot.values())
    return min(k for k, c in per_slot.items() if c <= best * (1 + slack))


def _time_or_inf(cfg: FitConfig, device: torch.device | str, k: int, options: PackOptions,
                 img: torch.Tensor) -> float:
    try:
        return time_pack_step(cfg, device, k, options, img)
    except Exception as e:  # noqa: BLE001 - e.g. cuDNN's tuned algorithms wanting more memory: not a choice
        torch.cuda.empty_cache()
        if not isinstance(e, torch.cuda.OutOfMemoryError):
            warnings.warn(f"zssr-batch: timing a pack of {k} ({describe(options)}) failed: {' '.join(str(e).split())[:200]}")
        return math.inf


def step_cache() -> Path:
    """Where measured step times are kept between runs: ``$ZSSR_BATCH_CACHE``, else the user's cache folder.

    Delete the file to measure again (after changing drivers, say)."""
    folder = os.environ.get("ZSSR_BATCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                        "zssr-batch")
    return Path(folder) / "pack-steps.json"


def _machine(device: torch.device) -> list:
    """What a step time depends on besides the pack: the card model and the software that drives it."""
    return [torch.cuda.get_device_name(device), torch.__version__, torch.version.cuda, torch.backends.cudnn.version()]


def _way(options: PackOptions) -> dict:
    """``options`` as the step cache keys them: with the Triton kernels' tile shapes, on which their speed hangs."""
    way = asdict(options)
    del way["beside"]  # where checks and outputs run leaves the training step as it is
    if options.conv == "triton":
        from .triton_conv import TILES

        way["tiles"] = {kind: list(shape) for kind, shape in sorted(TILES.items())}
    return way


def _load_cache() -> dict[str, float]:
    try:
        data = json.loads(step_cache().read_text())
        return {key: float(v) for key, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, RuntimeError, ValueError, TypeError):  # RuntimeError: no home folder to be found
        return {}  # none yet, or unreadable: measure


def _save_cache(new: dict[str, float]) -> None:
    """Merge ``new`` into the file atomically (actors on the machine's other GPUs may have written since)."""
    try:
        path = step_cache()
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_load_cache(), **new}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a read-only or missing home costs a probe per run, nothing else
        warnings.warn(f"zssr-batch: could not keep the pack timings: {e}")


def measured_step_times(cfg: FitConfig, device: torch.device | str, sizes: Iterable[int], options: PackOptions,
                        side: int, channels: int = 3) -> dict[int, float]:
    """ms per full-pack step at each of ``sizes``: from this process, else from ``step_cache``, else timed now.

    Failed timings (infinite) are kept for the process only: free memory differs from run to run.
    """
    device = torch.device(device)
    way = _way(options)
    # a gradual pack's step also makes the pairs of every scale step (pack.device): its steps count
    net = (str(device), channels, cfg.depth, cfg.width, cfg.crop, tuple(cfg.scale) + tuple(cfg.scale_steps),
           cfg.noise_std > 0, json.dumps(way, sort_keys=True))
    sizes = sorted(set(sizes))
    missing = [k for k in sizes if (net, k) not in _step_ms]
    disk_key: dict[int, str] = {}
    if missing and device.type == "cuda":
        machine = _machine(device)
        disk_key = {k: json.dumps([machine, list(net[1:-1]), way, k]) for k in missing}
        disk = _load_cache()
        kept = [k for k in missing if disk_key[k] in disk]
        for k in kept:
            _step_ms[(net, k)] = disk[disk_key[k]]
            missing.remove(k)
        if kept:
            print(f"zssr-batch: ms per pack step by pack size on {device} ({describe(options)}), as measured before "
                  f"(delete {step_cache()} to measure again): {', '.join(f'{k}: {disk[disk_key[k]]:.1f}' for k in kept)}",
                  file=sys.stderr, flush=True)
    if missing:
        img = torch.rand(channels, max(side, cfg.crop), max(side, cfg.crop))
        for k in missing:
            _step_ms[(net, k)] = _time_or_inf(cfg, device, k, options, img)
        times = ", ".join(f"{k}: {_step_ms[(net, k)]:.1f}" for k in sizes)
        print(f"zssr-batch: ms per pack step by pack size on {device} ({describe(options)}): {times}",
              file=sys.stderr, flush=True)
        if disk_key:
            _save_cache({disk_key[k]: _step_ms[(net, k)] for k in missing if math.isfinite(_step_ms[(net, k)])})
    return {k: _step_ms[(net, k)] for k in sizes}


def describe(options: PackOptions) -> str:
    """The ways of running a pack that the probe compares, in words."""
    return (f"{options.conv} convolutions" + (", thin ends padded" if options.pad_thin else "")
            + (", cuDNN-tuned" if options.tune else ""))


def candidates(options: PackOptions, triton: bool = False) -> list[PackOptions]:
    """The ways of running a pack worth timing, simplest first: each of ``conv``, ``pad_thin`` and
    ``tune`` that ``options`` leave at their defaults is tried both ways; one set otherwise is kept.
    With ``triton``, and all three at their defaults, the Triton kernel last (it runs no cuDNN and
    masks its own channels: neither tuning nor padding applies to it)."""
    convs = ["grouped", "split"] if options.conv == "grouped" else [options.conv]
    pads = [False, True] if not options.pad_thin else [True]
    tunes = [False, True] if not options.tune else [True]
    ways = [replace(options, conv=c, pad_thin=p, tune=t) for t in tunes for c in convs for p in pads]
    if triton and (options.conv, options.pad_thin, options.tune) == ("grouped", False, False):
        ways.append(replace(options, conv="triton"))
    return ways


def cpu_pack_size(cfg: FitConfig) -> int:
    """``CPU_PACK`` while a slot's layer activations fit ``CPU_SLOT_BYTES``, else 1 (one fit at a time)."""
    return CPU_PACK if cfg.width * cfg.crop**2 * 4 <= CPU_SLOT_BYTES else 1


def plan_pack(cfg: FitConfig, device: torch.device | str, largest: tuple[int, int] | None = None,
              images: int | None = None, options: PackOptions = PackOptions(),
              channels: int = 3) -> tuple[int, PackOptions]:
    """How many fits to pack for a batch of ``images`` whose largest input is ``largest`` (h, w), and how.

    A CPU packs ``cpu_pack_size`` fits, their thin ends padded when it packs more than one.
    Settings that cannot pack are fitted alone anyway (``CPU_PACK``, nothing timed). A GPU
    times the ``candidates`` at ``PROBE_AT`` fits (or what memory and the batch allow),
    keeps the simplest within ``SLACK`` of the fastest, then packs the measured best size (the smallest
    within ``SIZE_SLACK``)
    that its memory holds. Never more than the batch has images.
    """
    device = torch.device(device)
    if not packable(cfg):  # fitted alone anyway: nothing to time
        return max(1, min(CPU_PACK, images or CPU_PACK)), options
    if device.type != "cuda":
        k = max(1, min(cpu_pack_size(cfg), images or CPU_PACK))
        return k, replace(options, pad_thin=options.pad_thin or k > 1)
    cap = min(memory_pack_size(cfg, device, largest, channels), images or MAX_PACK)  # no size the batch cannot fill
    side = max(largest) if largest is not None else cfg.crop
    at = min(PROBE_AT, cap)
    ways = {opts: measured_step_times(cfg, device, [at], opts, side, channels)[at]
            for opts in candidates(options, triton_available())}
    fastest = min(ways.values())
    # The simplest within SLACK of the fastest; if none could be timed, the first: ``options`` itself.
    opts = next(o for o, ms in ways.items() if ms <= fastest * (1 + SLACK))
    times = measured_step_times(cfg, device, {s for s in PROBE_SIZES if s < cap} | {cap, at}, opts, side, channels)
    k = choose_pack_size(times)  # the smallest if none could be timed
    return max(1, min(k, images or k)), opts
