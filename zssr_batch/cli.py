"""Command line: run (a dataset), fit (one image), report, samples, degrade (benchmark inputs).

Every FitConfig field is a flag (``--max-iters``, ``--crop``, ...), so anything a
config file can set, the command line can set too, and it wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, Sequence

from . import __version__
from .config import PRESETS, FitConfig, load_config_file, resolve
from .files.display import shown, tolerant_output

DESCRIPTION = """ZSSR super-resolution for whole image datasets: each image gets its own network, trained on
that image alone, then upscales it.

  zssr-batch samples s && zssr-batch run --input s --degrade --preset fast --output out
      a first try: four generated pictures, shrunk by 2, upscaled back and scored

'zssr-batch COMMAND --help' tells each command's options and their defaults."""


# A metavar per kind of setting, so that --help says what a value looks like.
_METAVARS = {"int": "N", "float": "X", "Scale": "S", "tuple[Scale, ...]": "STEPS", "tuple[int, ...]": "N[,N]",
             "str": "NAME"}


def _shown(value: Any) -> str:
    """A FitConfig default as a user would type it."""
    if isinstance(value, tuple):
        if not value:
            return "none"
        if all(isinstance(v, tuple) for v in value):
            return ";".join(_shown(v) for v in value)
        return _shown(value[0]) if len(set(value)) == 1 else ",".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if value == "" else str(value)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (defaults: the authors' configs.py, X2_ONE_JUMP_IDEAL_CONF; a --preset or "
                             "--config changes some)")
    g.add_argument("--preset", choices=list(PRESETS), default=None, metavar="NAME",
                   help=f"start from these settings: {', '.join(PRESETS)} (default: paper)")
    g.add_argument("--config", metavar="FILE", help="YAML or TOML file of settings (and optionally 'preset')")
    g.add_argument("--device", default="auto", metavar="DEV", type=_device,
                   help="cpu, cuda, cuda:N or auto (default: auto)")
    for f in fields(FitConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f"{f.metadata.get('help')} (default: {_shown(default)})"
        if f.type == "bool":
            g.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            g.add_argument(flag, dest=f.name, default=None, help=text,
                           metavar="PATH" if f.name == "kernel" else _METAVARS.get(str(f.type), "V"))


def engine_sources(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(preset, config-file values, command-line values): the flag's preset wins over the file's."""
    file_values = load_config_file(args.config) if args.config else {}
    preset = args.preset or file_values.pop("preset", None) or "paper"
    file_values.pop("preset", None)
    flags = {f.name: getattr(args, f.name) for f in fields(FitConfig) if getattr(args, f.name) is not None}
    for values in (file_values, flags):
        kernel = values.get("kernel")
        if kernel == "bicubic":  # said out loud: assume bicubic, whatever kernels a set has
            values["kernel"] = ""
        elif kernel and kernel != "estimate":  # a file, resolved here, once: actors may start elsewhere
            values["kernel"] = os.path.abspath(kernel)
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


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def cmd_run(args: argparse.Namespace) -> int:
    from functools import lru_cache

    from .files import storage
    from .files.plan import resolved
    from .files.sources import ScanOptions, check_layout, scan, why_nothing
    from .run.settings import Extras, RunSettings, check_address

    check_address(args.address)
    for flag, value in (("--input", args.input), ("--output", args.output), ("--gt", args.gt)):
        # Ray carries the driver's command line, and failed on such a name after the folder was made
        if value and not _utf8(value):
            raise ValueError(f"{shown(value)}: {flag} is not valid UTF-8 (a name in another encoding): Ray cannot "
                             f"carry it; rename it, or give its parent folder (names found inside a folder are fine)")
    base_preset, file_values, cli = engine_sources(args)
    base = resolve(base_preset, file_values, cli)  # fails early on bad settings
    if base.kernel not in ("", "estimate") and not os.path.isfile(base.kernel):  # (it failed every row, after Ray had started)
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
                       degrade=args.degrade, keep_ext=args.keep_ext,
                       set_kernels="kernel" not in cli and "kernel" not in file_values)
    if exts:
        opts.extensions = exts
    if not storage.exists(input_path):
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    if storage.is_url(out) and not args.dry_run:
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
        head_timeout=args.head_timeout,
        retries=args.retries,
        max_failures=args.max_failures, overwrite=args.overwrite, progress=not args.no_progress,
        verbose=args.verbose,
        max_pixels=args.max_pixels, degrade=args.degrade,
        extras=Extras(args.save_weights, report_dir=out if pictures else None),
        command=" ".join(sys.argv),
        engine={"preset": base_preset, **base.to_dict(), "config_hash": base.hash()})
    if storage.isdir(input_path) and resolved(input_path) == resolved(out):
        raise ValueError(f"{out}: --output is the input folder; outputs would lie among the inputs: choose another")
    items = list(scan(input_path, opts))
    for line in opts.skipped[:20]:
        print(shown(f"zssr-batch: skipped {line}"), file=sys.stderr)
    if not items:  # nothing to do: no Ray, no output folder
        why = why_nothing(input_path, opts) if storage.isdir(input_path) or opts.passed else \
            f"{input_path} lists no images"
        print(shown(f"zssr-batch: {why}"), file=sys.stderr)
        return 0
    if args.dry_run:
        from .run.preview import preview

        return preview(items, config_for, out, base_preset, args.overwrite, args.precision, args.max_pixels)
    from .run.driver import run  # (Ray's import, only now: a dry run and an empty folder do without)

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


def _some(pairs: list, skipped: list[str], where: str) -> list:
    """A degradation that found no image is a mistake (a wrong folder), not a set of none."""
    if not pairs and not skipped:
        raise ValueError(f"{where}: no images found to degrade")
    return pairs


def cmd_degrade(args: argparse.Namespace) -> int:
    from .files.degrade import RANDOM_KERNEL_SET, degrade_path, degrade_random_kernels

    if not os.path.exists(args.input):
        raise ValueError(f"{args.input}: no such file or folder")
    if args.random_kernels and args.suffix:  # the set's names are fixed: they are how `run` pairs its files
        raise ValueError("--suffix is for bicubic outputs; a random-kernel set names its LR files NAMEx<s>")
    skipped: list[str] = []

    def skip(line: str) -> None:  # one bad image costs only itself: said at once, the others go on
        skipped.append(line)
        print(shown(f"zssr-batch degrade: skipped {line}"), file=sys.stderr, flush=True)

    if not args.random_kernels:
        pairs = _some(degrade_path(args.input, args.output, args.scale, args.suffix, skip), skipped, args.input)
        print(shown(f"degraded {len(pairs)} image(s) by x{args.scale:g} into {args.output}" + _skipped(skipped)))
        return 1 if skipped else 0
    pairs = _some(degrade_random_kernels(args.input, args.output, args.scale, args.seed, skip), skipped, args.input)
    s = int(args.scale)
    print(shown(f"degraded {len(pairs)} image(s) by x{s} with random kernels (seed {args.seed}) into {args.output}: "
                f"HR/, {RANDOM_KERNEL_SET}/X{s}/, kernels/X{s}/; try: zssr-batch run --input {args.output} "
                f"--scale {s} --output OUT" + _skipped(skipped)))
    return 1 if skipped else 0


def _skipped(skipped: list[str]) -> str:
    return f" ({len(skipped)} skipped, named above)" if skipped else ""


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


def _device(text: str) -> str:
    """An argparse type: where the fits run, checked before any work (a typo used to mean the CPU)."""
    name = text.strip().lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")


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


RUN_EXAMPLES = """examples:
  zssr-batch run --input photos/ --output photos_x2/                 every GPU, the paper's settings
  zssr-batch run --input Set5 --output set5/ --scale 2 --dry-run     what would be done, without Ray
  zssr-batch run --input hr/ --degrade --scale 4 --output bench_x4/  make LR inputs from GT, upscale, score
  zssr-batch run --input list.csv --output out/ --gpus 2             a manifest (input[,gt,output,preset,...])
  zssr-batch run --input s --degrade --preset fast --output out      a quick try on a CPU

exit codes: 0 all ok, 1 some images failed, 2 usage or a run that cannot start, 3 --max-failures,
4 disk full, 5 lost the Ray head, 130 Ctrl-C, 143 SIGTERM. A rerun resumes: done images are kept."""


def add_run_options(run: argparse.ArgumentParser) -> None:
    g = run.add_argument_group("inputs")
    g.add_argument("--input", required=True, metavar="PATH",
                   help="folder (scanned recursively), .csv/.jsonl manifest, or one image; s3:// and other "
                        "fsspec URLs work too")
    g.add_argument("--gt", metavar="DIR", help="ground truth, paired by relative path and stem (any extension; "
                                               "default: the authors' NAME_gt beside NAME, or a benchmark set's HR/)")
    g.add_argument("--degrade", action="store_true",
                   help="the inputs are ground truth: make LR inputs with MATLAB bicubic, upscale, score")
    g.add_argument("--glob", metavar="PATTERN",
                   help="only inputs whose relative path matches, e.g. '*.png'; in a manifest, the input "
                        "column's path (default: every image)")
    g.add_argument("--extensions", metavar="EXT[,EXT]", help="extensions to pick up (default: all supported)")
    g.add_argument("--no-recursive", action="store_true", help="do not descend into subfolders")
    g.add_argument("--max-pixels", type=_at_least(64), default=100_000_000, metavar="N",
                   help="refuse inputs with more pixels than this (default: 100000000)")

    g = run.add_argument_group("outputs")
    g.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="output folder (or URL): images, report.csv, summary.csv, run.json, report.html")
    g.add_argument("--suffix", default="", type=_suffix, metavar="TEXT",
                   help="appended to each output's stem (default: none)")
    g.add_argument("--ext", default=None, type=_output_ext, metavar="EXT",
                   help="output format, e.g. png (default: the input's own)")
    g.add_argument("--keep-ext", action="store_true",
                   help="keep the input's extension in the output's name where the two differ (b.gif -> "
                        "b.gif.png), so that b.png and b.gif do not write one file")
    g.add_argument("--overwrite", action="store_true", help="redo images already done with the same settings")
    g.add_argument("--save-weights", action="store_true", help="keep each fitted network beside its output")

    g = run.add_argument_group("run")
    g.add_argument("--dry-run", action="store_true",
                   help="list each input, its output, ground truth, kernel, preset and whether it is done "
                        "already, then exit without starting Ray")
    g.add_argument("--gpus", type=_at_least(0), default=None, metavar="N",
                   help="GPUs to use (default: all; 0 = CPU only)")
    g.add_argument("--pack", type=_at_least(0), default=0, metavar="K",
                   help="fits trained together in one pack; 1 = one image per call, no packing (default: 0 = "
                        "on a GPU the fastest measured size its memory holds; on a CPU 4 for crops up to 64, else 1)")
    g.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="packed networks on a GPU (default: bf16, faster, -0.03 dB measured); CPUs run fp32")
    g.add_argument("--batch", type=_at_least(1), default=None, metavar="N",
                   help="images per actor call when packing (default: on a GPU 1024 shrinking to 128 toward "
                        "the end, or 8 to 2 x --pack; 16 on CPUs)")
    g.add_argument("--images-per-gpu", type=_at_least(1), default=None, metavar="N",
                   help="actors sharing one GPU (default: 1 when packing, 4 with --pack 1)")
    g.add_argument("--workers", type=_at_least(1), default=None, metavar="N",
                   help="CPU actors when no GPU is used (default: cores / threads)")
    g.add_argument("--threads", type=_at_least(1), default=None, metavar="N",
                   help="torch threads per actor (default: the cores an actor is given)")
    g.add_argument("--retries", type=_at_least(0), default=2, metavar="N",
                   help="resubmissions of an image whose worker died (default: 2)")
    g.add_argument("--max-failures", type=_at_least(1), default=None, metavar="N",
                   help="stop early after this many failed images (default: never)")
    g.add_argument("--no-progress", action="store_true",
                   help="one line per event instead of a progress bar (the default without a terminal)")
    g.add_argument("--verbose", "-v", action="store_true", help="Ray's own start-up lines too")

    g = run.add_argument_group("cluster")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join, host:port (default: RAY_ADDRESS, else a local Ray)")
    g.add_argument("--wait-for-gpus", type=_at_least(0), default=600, metavar="S",
                   help="with --gpus N on a cluster that has fewer: the run asks the autoscaler for N GPUs, uses "
                        "each as its node joins, and waits up to S seconds for the first if it has none "
                        "(default: 600)")
    g.add_argument("--head-timeout", type=_at_least(1), default=15, metavar="S",
                   help="stop the run (exit 5, its report whole) once the Ray head has not answered for S "
                        "seconds; a head with fault-tolerant GCS that restarts slower needs more (default: 15)")

    g = run.add_argument_group("report")
    g.add_argument("--no-report-images", action="store_true",
                   help="skip the thumbnails, crops and curves of report.html (.report/)")


class Parser(argparse.ArgumentParser):
    """argparse with errors in two lines, not a usage block of twenty: what is wrong, where to look.

    No abbreviations: '--gpu 1' for --gpus, or '--out' quietly replacing an earlier --output, are
    mistakes to point out ('did you mean'), not to guess."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help'\n")


def _known(parser: argparse.ArgumentParser, command: str | None) -> list[str]:
    sub = _subparsers(parser).get(command or "", parser)
    return [o for a in sub._actions for o in a.option_strings if o.startswith("--")]


def unknown_flags(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> str:
    """The error for flags no parser knows, with the closest known flag of the command for each."""
    known = _known(parser, command)
    parts = []
    for word in extra:
        flag = word.split("=", 1)[0]
        # a near miss in spelling (--gpu), then known flags that end with it (--iters: --max-iters), then
        # a far miss
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.8) \
            or [k for k in known if k.endswith("-" + flag[2:])][:2] \
            or difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        parts.append(f"{word} (did you mean {' or '.join(close)}?)" if close else word)
    return "unrecognized arguments: " + " ".join(parts)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zssr-batch", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"zssr-batch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit ZSSR on one image and upscale it",
                         usage="zssr-batch fit INPUT --output PATH [options]")
    fit.add_argument("input", metavar="INPUT", help="the low-resolution image")
    fit.add_argument("-o", "--output", required=True, metavar="PATH",
                     help="where to write the upscaled image (its extension picks the format)")
    fit.add_argument("--gt", metavar="PATH", help="ground truth, to score PSNR/SSIM (RGB and Y) against")
    fit.add_argument("--compare", metavar="IMAGE", help="another method's result (e.g. EDSR) to score beside ours")
    fit.add_argument("--json", action="store_true", help="print one JSON object of results")
    fit.add_argument("--save-weights", action="store_true", help="keep the fitted network (OUTPUT stem .safetensors)")
    fit.add_argument("--save-pairs", type=_at_least(0), default=0, metavar="N",
                     help="keep every Nth training father/son pair (default: 0, none)")
    fit.add_argument("--save-variants", action="store_true", help="keep the single-pass, mean and median outputs")
    fit.add_argument("--save-curve", action="store_true", help="keep loss and learning rate per step (CSV)")
    fit.add_argument("--max-pixels", type=_at_least(64), default=None, metavar="N",
                     help="refuse inputs with more pixels than this (default: no limit)")
    add_engine_options(fit)
    fit.set_defaults(func=cmd_fit)

    run = sub.add_parser("run", help="upscale a folder or manifest through Ray actors into a CSV report",
                         usage="zssr-batch run --input PATH --output DIR [options]",
                         description="Upscale every image of a folder or manifest with its own ZSSR fit, on "
                                     "local Ray (the default) or a Ray cluster, into an output folder with "
                                     "report.csv, summary.csv, run.json and report.html.",
                         epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(run)
    add_engine_options(run)
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="rebuild summary.csv, the printed table and report.html from DIR/report.csv")
    rep.add_argument("dir", help="a run's output folder")
    rep.set_defaults(func=cmd_report)

    smp = sub.add_parser("samples", help="write a few generated sample images to try a run on")
    smp.add_argument("dir", metavar="DIR", help="folder to write them to")
    smp.add_argument("--size", type=_at_least(16), default=128, metavar="N", help="side in pixels (default: 128)")
    smp.set_defaults(func=cmd_samples)

    deg = sub.add_parser("degrade", help="crop to a multiple of the scale and MATLAB-bicubic shrink, or make a "
                                          "blind-SR set with random kernels")
    deg.add_argument("input", help="an image or a folder of images")
    deg.add_argument("-o", "--output", required=True,
                     help="output image, or folder for a folder; with --random-kernels the set's folder")
    deg.add_argument("--scale", type=float, required=True, metavar="S", help="shrink factor, e.g. 2")
    deg.add_argument("--suffix", default="", type=_suffix, metavar="TEXT",
                     help="appended to each output stem, e.g. x2 (default: none)")
    deg.add_argument("--random-kernels", action="store_true",
                     help="blur each image with its own random anisotropic Gaussian (the authors' "
                          "BlindSR_dataset_generator) and write HR/, LR_randomkernel/X<s>/ and kernels/X<s>/ "
                          "under --output, which `run --input` pairs by itself")
    deg.add_argument("--seed", type=_at_least(0), default=0, metavar="N",
                     help="with --random-kernels: the same seed makes the same kernels (default 0)")
    deg.set_defaults(func=cmd_degrade)
    return parser


class Terminated(Exception):
    """SIGTERM before a run's own handling of it began (start-up: imports, the scan, Ray's start)."""


def _terminated(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    tolerant_output()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    unknown = [a for a in argv if a.startswith("--") and a.split("=", 1)[0] not in _known(parser, command)]
    if unknown and command in _subparsers(parser):  # before argparse's 'required: --input' for a mistyped --inptu
        parser.exit(2, f"zssr-batch {command}: error: {unknown_flags(parser, command, unknown)}\n"
                       f"see 'zssr-batch {command} --help'\n")
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.exit(2, f"zssr-batch {args.command}: error: {unknown_flags(parser, args.command, extra)}\n"
                       f"see 'zssr-batch {args.command} --help'\n")
    before = signal.signal(signal.SIGTERM, _terminated) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # one clear line for the user, not a traceback
        print(shown(f"zssr-batch {args.command}: error: {e}"), file=sys.stderr)
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
