"""Command line: ``run`` (a dataset), ``fit`` (one image), ``report``, ``degrade`` (benchmark inputs).

Every FitConfig field is a flag (``--max-iters``, ``--crop``, ...), so anything a
config file can set, the command line can set too, and it wins.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import PRESETS, FitConfig, load_config_file, resolve


def add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine settings (defaults: the official ZSSR configs.py)")
    g.add_argument("--preset", choices=list(PRESETS), default=None, help="start from these settings (default paper)")
    g.add_argument("--config", metavar="FILE", help="YAML or TOML file of settings (and optionally 'preset')")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    for f in fields(FitConfig):
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar="V",
                       help=f.metadata.get("help"))


def engine_sources(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(preset, config-file values, command-line values): the flag's preset wins over the file's."""
    file_values = load_config_file(args.config) if args.config else {}
    preset = args.preset or file_values.pop("preset", None) or "paper"
    file_values.pop("preset", None)
    flags = {f.name: getattr(args, f.name) for f in fields(FitConfig) if getattr(args, f.name) is not None}
    return preset, file_values, flags


def engine_config(args: argparse.Namespace) -> FitConfig:
    return resolve(*engine_sources(args))


def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def cmd_fit(args: argparse.Namespace) -> int:
    from .run.item import process_image
    from .run.settings import Extras

    cfg = engine_config(args)
    extras = Extras(args.save_weights, args.save_pairs, args.save_variants, args.save_curve)
    record = process_image(args.input, args.output, cfg, args.device, args.gt, args.compare, extras,
                           args.max_pixels)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in record.items()}))
    else:
        print(f"{record['input']} -> {record['output']}  {record['width']}x{record['height']} -> "
              f"{record['out_width']}x{record['out_height']}  {record['iterations']} steps, "
              f"fit {record['fit_seconds']:.1f} s, infer {record['infer_seconds']:.1f} s")
        if record["psnr_y"] is not None:
            print(f"PSNR-Y {record['psnr_y']:.2f} dB (bicubic {record['bicubic_psnr_y']:.2f}), "
                  f"SSIM-Y {record['ssim_y']:.4f} (bicubic {record['bicubic_ssim_y']:.4f})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from functools import lru_cache

    from .files import storage
    from .files.plan import resolved
    from .files.sources import ScanOptions, check_layout, scan, why_nothing
    from .run.cluster import check_address
    from .run.driver import run
    from .run.settings import Extras, RunSettings

    check_address(args.address)
    base_preset, file_values, cli = engine_sources(args)
    for values in (file_values, cli):  # resolved here, once: actors on other nodes start elsewhere
        if values.get("kernel"):
            values["kernel"] = os.path.abspath(values["kernel"])
    base = resolve(base_preset, file_values, cli)  # fails early on bad settings
    if base.kernel and not os.path.isfile(base.kernel):  # (it failed every row, after Ray had started)
        raise FileNotFoundError(f"{base.kernel}: no such kernel file (--kernel)")

    @lru_cache(maxsize=256)
    def _cfg(preset: str | None, overrides: tuple) -> FitConfig:
        return resolve(preset or base_preset, file_values, {**cli, **dict(overrides)})

    def config_for(item) -> FitConfig:
        return _cfg(item.preset, item.overrides)

    # Paths resolved once, here: one meaning on every node, whatever its working directory. A URL
    # (s3://, gs://, ...) is a place of its own; file:// is a local path.
    out = _place(args.output)
    input_path = _place(args.input)
    exts = tuple("." + e.lower().lstrip(".") for e in args.extensions.split(",")) if args.extensions else None
    scale = base.scale[0] if base.scale[0] == base.scale[1] else None
    opts = ScanOptions(output_dir=out, glob=args.glob, recursive=not args.no_recursive, suffix=args.suffix,
                       ext=args.ext, gt_dir=_place(args.gt) if args.gt else None, scale=scale,
                       degrade=args.degrade, keep_ext=args.keep_ext)
    if exts:
        opts.extensions = exts
    if not storage.exists(input_path):
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    if storage.is_url(out):
        storage.check_writable(out)
    local_input = not storage.is_url(input_path)
    if local_input:
        check_layout(Path(input_path), opts)
    # report.html's pictures are for a local --output (an object store's run keeps its report files)
    pictures = not args.no_report_images and not storage.is_url(out)
    settings = RunSettings(
        output_dir=out, gpus=args.gpus, images_per_gpu=args.images_per_gpu, pack=args.pack, batch=args.batch,
        precision=args.precision,
        cpu_workers=args.workers,
        threads_per_worker=args.threads, address=args.address, device=args.device, wait_for_gpus=args.wait_for_gpus,
        retries=args.retries,
        max_failures=args.max_failures, overwrite=args.overwrite, progress=not args.no_progress,
        max_pixels=args.max_pixels, degrade=args.degrade,
        extras=Extras(args.save_weights, report_dir=out if pictures else None),
        command=" ".join(sys.argv),
        engine={"preset": base_preset, **base.to_dict(), "config_hash": base.hash()})
    if storage.isdir(input_path) and resolved(input_path) == resolved(out):
        raise ValueError(f"{out}: --output is the input folder; outputs would lie among the inputs: choose another")
    items = list(scan(input_path, opts))
    for line in opts.skipped[:20]:
        print(f"zssr-batch: skipped {line}", file=sys.stderr)
    if not items:  # nothing to do: no Ray, no output folder
        why = why_nothing(input_path, opts) if storage.isdir(input_path) else f"{input_path} lists no images"
        print(f"zssr-batch: {why}", file=sys.stderr)
        return 0
    return run(items, config_for, settings)


def _place(where: str) -> str:
    """A path made absolute, or an object store's URL as it is (``file://`` is a local path)."""
    from .files import storage
    from .files.plan import absolute

    return absolute(storage.local(where))


def cmd_report(args: argparse.Namespace) -> int:
    from .report.html import write_html_report
    from .report.table import write_summary

    d = Path(args.dir)
    if not (d / "report.csv").is_file():
        raise FileNotFoundError(f"{d / 'report.csv'}: no report to summarize")
    print(write_summary(d))
    print(f"zssr-batch: wrote {write_html_report(d)}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from .files.samples import write_samples

    paths = write_samples(args.dir, args.size)
    print(f"wrote {len(paths)} sample images to {args.dir}; try: zssr-batch run --input {args.dir} "
          f"--degrade --scale 2 --preset fast --output out/")
    return 0


def cmd_degrade(args: argparse.Namespace) -> int:
    from .files.degrade import degrade_path

    pairs = degrade_path(args.input, args.output, args.scale, args.suffix)
    print(f"degraded {len(pairs)} image(s) by x{args.scale:g} into {args.output}")
    return 0


def _at_least(low: int):
    """An argparse type: a whole number >= ``low`` (a bad one is a usage error before any work)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n
    parse.__name__ = f"whole number >= {low}"
    return parse


def _output_ext(text: str) -> str:
    from .files.images import EXTENSIONS

    ext = "." + text.lower().lstrip(".")
    if ext not in EXTENSIONS:
        raise argparse.ArgumentTypeError(f"cannot write {text!r} files; use one of "
                                         f"{', '.join(e[1:] for e in EXTENSIONS)}")
    return ext


def _suffix(text: str) -> str:
    if "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: a suffix is part of a file name and cannot hold a path separator")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zssr-batch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zssr-batch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit ZSSR on one image and upscale it")
    fit.add_argument("input", help="the low-resolution image")
    fit.add_argument("-o", "--output", required=True, help="where to write the upscaled image")
    fit.add_argument("--gt", help="ground truth, to score PSNR/SSIM (RGB and Y) against")
    fit.add_argument("--compare", metavar="IMAGE", help="another method's result (e.g. EDSR) to score beside ours")
    fit.add_argument("--json", action="store_true", help="print one JSON object of results")
    fit.add_argument("--save-weights", action="store_true", help="keep the fitted network (OUTPUT stem .safetensors)")
    fit.add_argument("--save-pairs", type=int, default=0, metavar="N", help="keep every Nth training father/son pair")
    fit.add_argument("--save-variants", action="store_true", help="keep the single-pass, mean and median outputs")
    fit.add_argument("--save-curve", action="store_true", help="keep loss and learning rate per step (CSV)")
    fit.add_argument("--max-pixels", type=int, default=None, help="refuse inputs with more pixels than this")
    add_engine_options(fit)
    fit.set_defaults(func=cmd_fit)

    run = sub.add_parser("run", help="upscale a folder or manifest through Ray actors into a CSV report")
    run.add_argument("--input", required=True, help="folder (scanned recursively), .csv/.jsonl manifest, or image")
    run.add_argument("--output", "-o", required=True, help="output folder: images, report.csv, summary.csv, run.json")
    run.add_argument("--gt", help="folder of ground truth, paired by relative path and stem (any extension)")
    run.add_argument("--degrade", action="store_true",
                     help="inputs are ground truth: make LR inputs with MATLAB bicubic, upscale, score")
    run.add_argument("--glob", help="only inputs whose relative path matches this pattern, e.g. '*.png'")
    run.add_argument("--extensions", help="comma-separated extensions to pick up (default: all supported)")
    run.add_argument("--no-recursive", action="store_true", help="do not descend into subfolders")
    run.add_argument("--suffix", default="", type=_suffix, help="appended to each output stem (default none)")
    run.add_argument("--keep-ext", action="store_true",
                     help="keep the input's extension in the output's name where the two differ (b.gif -> b.gif.png), "
                          "so that b.png and b.gif do not write one file")
    run.add_argument("--ext", default=None, type=_output_ext, help="output format, e.g. png (default: same as the input)")
    run.add_argument("--gpus", type=_at_least(0), default=None, help="GPUs to use (default all; 0 = CPU only)")
    run.add_argument("--pack", type=_at_least(0), default=0,
                     help="fits trained together in one pack (default 0: on a GPU the fastest measured size "
                          "that its memory holds; on a CPU 4 for crops up to 64, else 1); 1 = one image per actor "
                          "call, no packing")
    run.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                     help="packed networks on a GPU (default bf16: faster, -0.03 dB measured); CPUs run fp32")
    run.add_argument("--batch", type=_at_least(1), default=None,
                     help="images per actor call when packing (default on a GPU: 1024 shrinking to 128 toward the "
                          "end, or 8 to 2 x --pack; 16 on CPUs)")
    run.add_argument("--images-per-gpu", type=_at_least(1), default=None,
                     help="actors sharing one GPU (default 1 when packing, 4 with --pack 1)")
    run.add_argument("--workers", type=_at_least(1), default=None, help="CPU actors when no GPU is used (default cores/threads)")
    run.add_argument("--threads", type=_at_least(1), default=None, help="torch threads per actor")
    run.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else local Ray)")
    run.add_argument("--wait-for-gpus", type=_at_least(0), default=600, metavar="S",
                     help="with --gpus N on a cluster that has fewer: the run asks the autoscaler for N GPUs, uses "
                          "each as its node joins, and waits up to S seconds for the first if it has none (default 600)")
    run.add_argument("--retries", type=_at_least(0), default=2, help="resubmissions of an image whose worker died")
    run.add_argument("--max-failures", type=_at_least(1), default=None, help="stop early after this many failed images")
    run.add_argument("--overwrite", action="store_true", help="redo images already done with the same settings")
    run.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    run.add_argument("--max-pixels", type=_at_least(64), default=100_000_000, help="refuse inputs larger than this")
    run.add_argument("--save-weights", action="store_true", help="keep each fitted network beside its output")
    run.add_argument("--no-report-images", action="store_true",
                     help="skip the thumbnails, crops and curves of report.html (thumbs/, curves/)")
    add_engine_options(run)
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="rebuild summary.csv, the printed table and report.html from DIR/report.csv")
    rep.add_argument("dir", help="a run's output folder")
    rep.set_defaults(func=cmd_report)

    smp = sub.add_parser("samples", help="write a few generated sample images to try a run on")
    smp.add_argument("dir", help="folder to write them to")
    smp.add_argument("--size", type=int, default=128, help="side in pixels (default 128)")
    smp.set_defaults(func=cmd_samples)

    deg = sub.add_parser("degrade", help="crop to a multiple of the scale and MATLAB-bicubic shrink")
    deg.add_argument("input", help="an image or a folder of images")
    deg.add_argument("-o", "--output", required=True, help="output image, or folder for a folder")
    deg.add_argument("--scale", type=float, required=True, help="shrink factor, e.g. 2")
    deg.add_argument("--suffix", default="", help="appended to each output stem, e.g. x2")
    deg.set_defaults(func=cmd_degrade)
    return parser


class Terminated(Exception):
    """SIGTERM before a run's own handling of it began (start-up: imports, the scan, Ray's start)."""


def _terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    before = signal.signal(signal.SIGTERM, _terminated) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # one clear line for the user, not a traceback
        print(f"zssr-batch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:  # a signal during start-up: one line, its own code
        name, code = ("SIGTERM", 143) if isinstance(e, Terminated) else ("Ctrl-C", 130)
        print(f"\nzssr-batch {args.command}: {name}: stopped (every row already done is in report.csv)", file=sys.stderr)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        return code
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
