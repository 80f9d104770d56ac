"""Images per hour: one fit at a time (the baseline) vs packed fits, on the same images, timed in one process.

    python benchmarks/throughput.py --set ../shared/data/BSD100 --scale 2 --preset paper --device cuda
    python benchmarks/throughput.py --device cpu --tiny          # seconds on a 2-core CPU

The baseline is ``super_resolve`` image by image, eager, with each step's pair
made on the CPU and copied over (how ports do it, issue 6's baseline;
``--baseline-pairs device`` makes them on the device instead); it is the
reference for quality. ``--baseline-limit N`` times it on the first N
images only (it is slow); ``--baseline-workers W`` then, after the timed runs,
fits the other images alone too, W processes at a time, for their PSNR only, so
the quality of the packed path can be compared over every image (or over those
done within ``--quality-budget``). Each ``--variants`` entry is a
packed run over all the images: ``bf16`` or ``fp32``, optionally ``:K`` (pack
size; default as ``run`` picks it, measured within memory), ``:eager`` (no CUDA
graph), ``:tune`` (cuDNN picks its algorithms by timing them), ``:split``
(weight gradients as batched products), ``:triton`` (our implicit-GEMM kernel),
``:bmm`` (the K convolutions as im2col
and batched matrix products), ``:pad`` (thin ends padded to 8 channels) and
``:drainNN`` (a draining pack compacts at NN% live; default ``PackOptions.compact_below``, 90)
and ``:beside`` (tests and outputs on a second CUDA stream, beside the training). Without ``:K``
the ways left at their defaults are chosen by ``run``'s probe, as in ``run``. Prints a table, then one JSON line with
device, torch, images, both rates, the speedup and the mean PSNR-Y of the
baseline and of the first variant over the baseline's images (and over all
images).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from zssr_batch.config import resolve
from zssr_batch.engine.super_resolve import pick_device, super_resolve
from zssr_batch.files.images import load_image
from zssr_batch.engine.metrics import score
from zssr_batch.pack.size import plan_pack
from zssr_batch.pack.jobs import Job
from zssr_batch.pack.loop import fit_packed
from zssr_batch.pack.options import PackOptions
from zssr_batch.files.sources import ScanOptions, scan_folder

DEFAULT_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "BSD100"


def load_set(folder: Path, scale: int, limit: int | None, side: int | None) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    # the benchmark layout pairs LR_bicubic/X<s>/NAMEx<s>.png with HR/NAME.png, as `run` does
    items = list(scan_folder(folder, ScanOptions(output_dir=folder / "unused", scale=scale)))[:limit]
    out = []
    for item in items:
        lr = torch.from_numpy(load_image(item.input).color)
        hr = load_image(item.gt).color
        if side:  # tiny mode: a centre crop, and the matching ground truth
            h, w = lr.shape[-2:]
            y, x = (h - side) // 2, (w - side) // 2
            lr = lr[:, y:y + side, x:x + side]
            hr = hr[:, y * scale:(y + side) * scale, x * scale:(x + side) * scale]
        out.append((Path(item.input).stem, lr, hr))
    return out


def _fit_alone(args: tuple) -> tuple[str, float]:
    name, lr, hr, cfg, device, border, host_pairs = args
    torch.set_num_threads(1)  # W processes share the host's cores
    out = super_resolve(torch.from_numpy(lr), cfg, torch.device(device), pairs_on_host=host_pairs).output
    return name, score(out, hr, border)["psnr_y"]


def alone_in_processes(images: list, cfg, device: str, workers: int, border: int, host_pairs: bool,
                       deadline: float | None = None) -> dict[str, float]:
    """PSNR-Y of each image fitted alone by ``super_resolve``, W processes at a time (each its own CUDA
    context: a one-at-a-time fit leaves the GPU mostly idle, so several overlap well). With ``deadline``
    (a ``time.perf_counter()`` value), the images finished by then: the rest are given up."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    done: dict[str, float] = {}
    with ctx.Pool(workers) as pool:  # leaving the block terminates workers still fitting
        results = pool.imap_unordered(_fit_alone, [(nm, lr.numpy(), hr, cfg, device, border, host_pairs)
                                                   for nm, lr, hr in images])
        for _ in images:
            wait = None if deadline is None else deadline - time.perf_counter()
            if wait is not None and wait <= 0:
                break
            try:
                name, v = results.next(timeout=wait)
            except multiprocessing.TimeoutError:
                break
            done[name] = v
    return done


def parse_variant(text: str) -> tuple[str, int | None, PackOptions]:
    parts = text.split(":")
    if parts[0] not in ("bf16", "fp32"):
        raise SystemExit(f"variant {text!r}: start with bf16 or fp32")
    k = next((int(p) for p in parts[1:] if p.isdigit()), None)
    drain = next((int(p[5:]) / 100 for p in parts[1:] if p.startswith("drain") and p[5:].isdigit()),
                 PackOptions().compact_below)
    conv = next((c for c in ("split", "triton", "bmm") if c in parts), "grouped")
    return text, k, PackOptions(graphs="eager" not in parts, bf16=parts[0] == "bf16", tune="tune" in parts,
                                conv=conv, pad_thin="pad" in parts, compact_below=drain, beside="beside" in parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variants", nargs="+", default=None,
                    help="packed runs, e.g. bf16 fp32 bf16:64 fp32:eager (default: bf16 on a GPU, fp32 on a CPU)")
    ap.add_argument("--baseline-limit", type=int, default=None, help="time the baseline on the first N images")
    ap.add_argument("--baseline-pairs", choices=("host", "device"), default="host",
                    help="where the baseline makes each step's pair (default host: issue 6's baseline)")
    ap.add_argument("--baseline-workers", type=int, default=0,
                    help="also fit the images past --baseline-limit one at a time, in W processes, for their "
                         "PSNR only (untimed): the packed-vs-alone comparison over every image")
    ap.add_argument("--time-budget", type=float, default=None, help="start no further variant after this many s")
    ap.add_argument("--quality-budget", type=float, default=None,
                    help="give up the --baseline-workers fits still running this many s after the start")
    ap.add_argument("--triton-tiles", type=Path, default=None,
                    help="a JSON file of Triton tile shapes to use, as gpu_check.py --tiles-out writes it")
    ap.add_argument("--tiny", action="store_true", help="4 centre crops of 48x48, 40 steps of 24x24 crops")
    ap.add_argument("--max-iters", type=int, default=None, help="cap the preset's training steps (CPU runs)")
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.triton_tiles and args.triton_tiles.is_file():  # the shapes gpu_check measured fastest on this card
        from zssr_batch.pack import triton_conv as conv3x3_triton

        conv3x3_triton.TILES = {k: tuple(v) for k, v in json.loads(args.triton_tiles.read_text()).items()}
        print(f"Triton tiles: {conv3x3_triton.TILES}", flush=True)
    overrides: dict = {"scale": args.scale}
    if args.max_iters:
        overrides["max_iters"] = args.max_iters
    limit, side = args.limit, None
    if args.tiny:
        overrides.update(crop=24, max_iters=40, width=32)
        limit, side = limit or 4, 48
    cfg = resolve(args.preset, overrides=overrides)
    images = load_set(args.set, args.scale, limit, side)
    n = len(images)
    nb = min(n, args.baseline_limit or n)
    border = args.scale
    t_start = time.perf_counter()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def psnrs(results: dict) -> dict[str, float]:
        return {name: score(results[name].output, hr, border)["psnr_y"] for name, _, hr in images if name in results}

    sync()
    t0 = time.perf_counter()
    host_pairs = args.baseline_pairs == "host"
    base = {name: super_resolve(lr, cfg, device, pairs_on_host=host_pairs) for name, lr, _ in images[:nb]}
    sync()
    base_s = time.perf_counter() - t0
    base_psnr = psnrs(base)
    base_names = list(base_psnr)
    print(f"baseline: {nb} images in {base_s:.1f} s", flush=True)
    rows: list = []
    largest = max((tuple(lr.shape[-2:]) for _, lr, _ in images), key=lambda hw: hw[0] * hw[1])
    variants = {}
    for text in args.variants or (["bf16"] if device.type == "cuda" else ["fp32"]):
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            print(f"skipping variant {text}: past the time budget", flush=True)
            continue
        name, k, options = parse_variant(text)
        t0 = time.perf_counter()
        if not k:  # as `run` chooses: the size and the way (convolutions, tuning) by a probe, once per process
            k, options = plan_pack(cfg, device, largest, n, options)
        k = min(k, n)  # as fit_packed would use it
        probe_s = time.perf_counter() - t0
        sync()
        t0 = time.perf_counter()
        stats: dict = {}
        fast = dict(fit_packed((Job(nm, lr, cfg) for nm, lr, _ in images), k, device, options=options, stats=stats))
        sync()
        secs = time.perf_counter() - t0
        p = psnrs(fast)
        on_base = float(np.mean([p[nm] for nm in base_names]))
        variants[name] = {"pack": k, "tune": options.tune, "conv": options.conv, "pad_thin": options.pad_thin,
                          "beside": options.beside,
                          "probe_seconds": round(probe_s, 2),
                          "seconds": round(secs, 2), "images_per_hour": round(3600 * n / secs, 1),
                          "psnr_y_all": round(float(np.mean(list(p.values()))), 3),
                          "psnr_y_on_baseline_images": round(on_base, 3),
                          "mean_iterations": float(np.mean([r.iterations for r in fast.values()])),
                          "pack_steps": stats["steps"], "graph_replays": stats["replays"],
                          "graph_failed": stats["graph_failed"], "compactions": stats["compactions"],
                          # the share of computed slot-steps that trained a live image (a draining pack's waste)
                          "slot_use": round(stats["live_slot_steps"] / max(1, stats["slot_steps"]), 3),
                          # the host's seconds per phase of the loop (what the device waits on, if it does)
                          "host_seconds": {x[5:-2]: round(y, 2) for x, y in stats.items() if x.startswith("host_")},
                          # the device's seconds per phase (train, record, test, finish, fill, compact, alone),
                          # gaps where it waited on the host included (CUDA only); with :beside, the second
                          # stream's own as beside_test, beside_finish and beside_idle (overlapping the rest)
                          "device_seconds": {x[7:-2]: round(y, 2) for x, y in stats.items()
                                             if x.startswith("device_")},
                          "per_image_psnr_y": {nm: round(v, 3) for nm, v in p.items()},
                          "per_image_steps": {nm: r.iterations for nm, r in fast.items()}}
        rows.append((f"packed x{k} {name}", n, secs, on_base, float(np.mean(list(p.values()))),
                     variants[name]["mean_iterations"]))
        print(f"variant {name}: {n} images in {secs:.1f} s; "
              f"{json.dumps({x: y for x, y in variants[name].items() if not x.startswith('per_image')})}", flush=True)
    quality: dict = {}
    if args.baseline_workers and nb < n:  # after the timed runs, so that it cannot slow them down
        t0 = time.perf_counter()
        deadline = t_start + args.quality_budget if args.quality_budget else None
        more = alone_in_processes(images[nb:], cfg, str(device), args.baseline_workers, border, host_pairs, deadline)
        base_psnr.update(more)
        print(f"baseline quality: {len(more)} of {n - nb} more images fitted alone in {args.baseline_workers} "
              f"processes, {time.perf_counter() - t0:.1f} s (untimed)", flush=True)
        if variants:  # packed vs alone over every image fitted both ways
            both = sorted(base_psnr)
            first_p = next(iter(variants.values()))["per_image_psnr_y"]
            quality = {"images": len(both), "alone_psnr_y": round(float(np.mean([base_psnr[x] for x in both])), 3),
                       "packed_psnr_y": round(float(np.mean([first_p[x] for x in both])), 3)}
            quality["difference"] = round(quality["packed_psnr_y"] - quality["alone_psnr_y"], 3)
            print(f"packed ({next(iter(variants))}) vs alone over {len(both)} images: {quality['packed_psnr_y']:.3f} vs "
                  f"{quality['alone_psnr_y']:.3f} dB", flush=True)
    base_all = float(np.mean(list(base_psnr.values()))) if len(base_psnr) == n else None
    rows.insert(0, (f"one fit at a time (eager, pairs made on the {args.baseline_pairs})", nb, base_s,
                    float(np.mean([base_psnr[nm] for nm in base_names])), base_all,
                    float(np.mean([r.iterations for r in base.values()]))))
    print("| path | images | seconds | images / hour | mean PSNR-Y (baseline's images) | mean PSNR-Y (all) "
          "| mean steps |\n|---|---|---|---|---|---|---|")
    for label, count, secs, on_base, on_all, steps in rows:
        all_txt = f"{on_all:.3f}" if on_all is not None else "-"
        print(f"| {label} | {count} | {secs:.1f} | {3600 * count / secs:.0f} | {on_base:.3f} | {all_txt} "
              f"| {steps:.0f} |")
    base_rate = 3600 * nb / base_s
    first = next(iter(variants.values()), None)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "images": n, "baseline_images": nb, "preset": args.preset,
        "baseline_pairs": args.baseline_pairs, "baseline_images_per_hour": round(base_rate, 1),
        "fast_images_per_hour": first["images_per_hour"] if first else None,
        "speedup": round(first["images_per_hour"] / base_rate, 3) if first else None,
        "baseline_psnr_y": round(rows[0][3], 3),
        "fast_psnr_y": first["psnr_y_on_baseline_images"] if first else None,
        "fast_psnr_y_all": first["psnr_y_all"] if first else None,
        "baseline_psnr_y_all": round(base_all, 3) if base_all is not None else None,
        "baseline_per_image_psnr_y": {nm: round(v, 3) for nm, v in base_psnr.items()},
        "packed_vs_alone": quality, "variants": variants, "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
