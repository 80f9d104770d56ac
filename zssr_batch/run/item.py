"""One image: read it, fit it, write the output atomically, score it; what ``fit`` does, and what an
actor does per image when it does not pack.

load -> fit -> infer -> write -> score against the ground truth (and an optional comparison
image such as an EDSR result). ``prepare`` and ``finish`` are the halves a packed call
(``run.batch``) runs around its pack; ``run_item`` never raises for a bad image: failures come
back as rows, so that a run goes on.
"""

from __future__ import annotations

import errno
import io
import math
import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FitConfig
from ..engine.infer import MemoryPlan
from ..engine.kernel_estimate import Estimate
from ..engine.metrics import score
from ..engine.resize import imresize, output_size
from ..engine.super_resolve import SRResult, pick_device, super_resolve
from ..files import storage
from ..files.degrade import degrade_picture
from ..files.images import Picture, drops_alpha, keeps_profile, load_image, save_image, write_atomic
from ..files.plan import REPORT_PICTURES, file_stamp, picture_name
from ..files.sources import WorkItem
from ..files.weights import save_weights
from ..report.curves import curve_csv, curve_svg
from ..report.kernel_pictures import write_kernel_pictures
from ..report.row import SCORE_KEYS, Row, timestamp
from ..report.table import DISK_FULL
from ..report.thumbs import write_thumbs
from .faults import Faults
from .kernel import KernelPick, pick_kernel
from .settings import Extras

MIN_SIDE = 8  # below this a 3x3 network and an 11x11 SSIM window have nothing to work on


def scale_label(cfg: FitConfig) -> str:
    """'2' for a uniform scale, '2x1.5' (vertical x horizontal) otherwise: the report's ``scale``."""
    sv, sh = cfg.scale
    return f"{sv:g}" if sv == sh else f"{sv:g}x{sh:g}"


def item_row(item: WorkItem, cfg: FitConfig) -> Row:
    """What a worker knows of an image's row before it reads the image."""
    return Row.of(item, config_hash=cfg.hash(), scale=scale_label(cfg))


def failed(row: Row, err: BaseException) -> dict[str, Any]:
    """``row`` as a failed record for ``err``."""
    return row.failed(one_line(err, row.input)).as_record()


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def report_name(input_path: str, extras: Extras) -> str:
    """The input's path relative to the run (its ``rel``), naming its curve and thumbnails."""
    return extras.rel or posixpath.basename(input_path)


def _as_picture(color: torch.Tensor, like: Picture, alpha: torch.Tensor | None) -> Picture:
    return Picture(color.numpy(), None if alpha is None else alpha.numpy(), like.bit_depth, like.icc_profile)


@dataclass
class Prepared:
    """An input read and checked, ready to fit: what ``finish`` needs to write and score it."""

    input_path: str  # a path, or an object store's URL
    pic: Picture  # the LR input
    gt: Picture | None
    gt_path: str | None
    color: torch.Tensor  # (C, h, w) the engine's input
    kernel: np.ndarray | None  # what the fit downscales with (None: bicubic)
    # how ``kernel`` was chosen: the row's kernel_* columns, its pictures; None: still to be
    # estimated, by a packed call's estimator pack (``with_estimate``)
    picked: KernelPick | None
    sources: dict[str, str | None] = field(default_factory=dict)  # what the files held: the row's *_sha256, *_stat
    true_kernel: str | None = None  # the file of the kernel that made the input, where known


def _stamp(path: str) -> str | None:
    try:
        return file_stamp(path)
    except OSError:  # gone: the read says so in its own words
        return None


def check_gt_size(gt_path: str | Path, gt: Picture, lr_hw: tuple[int, int], cfg: FitConfig) -> None:
    """Refuse a ground truth that cannot be this input's: it must be ``scale`` x the input, give or
    take the usual crop to a multiple of the scale (less than ``scale`` pixels more). Scored
    anyway, another image's ground truth reads as an 11 dB 'result'."""
    out_h, out_w = output_size(lr_hw, cfg.scale)
    h, w = gt.size
    slack_h, slack_w = math.ceil(cfg.scale[0]), math.ceil(cfg.scale[1])
    if not (out_h <= h < out_h + slack_h and out_w <= w < out_w + slack_w):
        raise ValueError(f"{gt_path}: ground truth is {w}x{h}, but x{scale_label(cfg)} of the {lr_hw[1]}x{lr_hw[0]} "
                         f"input is {out_w}x{out_h}: not this input's ground truth?")


def prepare(input_path: str | Path, cfg: FitConfig, gt_path: str | Path | None = None,
            max_pixels: int | None = None, degrade_input: bool = False, true_kernel: str | None = None,
            device: torch.device | str = "cpu", estimate: bool = True) -> Prepared:
    """Read (and with ``degrade_input`` make) the input and its ground truth, and pick its kernel
    (``run.kernel``: with ``--kernel estimate`` it is estimated here, on ``device``, unless
    ``estimate`` is False: then ``with_estimate`` gives it later); raises on bad input.
    ``true_kernel``: the file of the kernel that made the input, where known."""
    input_path = os.fspath(input_path)
    stamp = _stamp(input_path)  # before the read: a later change shows
    pic = load_image(input_path, max_pixels)
    sources = {"input_sha256": pic.sha256, "input_stat": stamp}
    gt_pic = None
    if degrade_input:
        gt_pic = pic
        pic = degrade_picture(pic, max(cfg.scale))
        sources.update(gt_sha256=gt_pic.sha256, gt_stat=stamp)
    h, w = pic.size
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{input_path}: image {w}x{h} is smaller than the minimum {MIN_SIDE}x{MIN_SIDE}")
    side = min(cfg.crop, h, w)  # its training crops' (the settings checked a whole crop)
    factor = cfg.under_a_pixel(side)
    if factor:
        raise ValueError(f"{input_path}: image {w}x{h} is too small for x{scale_label(cfg)}: a factor of {factor!r} "
                         f"is under a pixel on its {side}x{side} training crops, so the fit would learn nothing")
    if gt_pic is None and gt_path:
        gt_stamp = _stamp(os.fspath(gt_path))
        gt_pic = load_image(gt_path, max_pixels)
        sources.update(gt_sha256=gt_pic.sha256, gt_stat=gt_stamp)
        check_gt_size(gt_path, gt_pic, (h, w), cfg)
    color = _tensor(pic.color)
    gt_name = str(input_path) if degrade_input else (str(gt_path) if gt_path else None)
    if cfg.kernel == "estimate" and not estimate:
        return Prepared(input_path, pic, gt_pic, gt_name, color, None, None, sources, true_kernel)
    picked = pick_kernel(color, cfg, None if gt_pic is None else gt_pic.color, true_kernel, device)
    return Prepared(input_path, pic, gt_pic, gt_name, color, picked.kernel, picked, sources, true_kernel)


def with_estimate(prep: Prepared, cfg: FitConfig, estimate: Estimate, seconds: float,
                  device: torch.device | str = "cpu") -> Prepared:
    """``prep`` (prepared with ``estimate=False``) given its kernel, estimated in a pack."""
    picked = pick_kernel(prep.color, cfg, None if prep.gt is None else prep.gt.color, prep.true_kernel, device,
                         (estimate, seconds))
    return replace(prep, kernel=picked.kernel, picked=picked)


def _write_extras(prep: Prepared, result: SRResult, output_path: str, cfg: FitConfig, extras: Extras,
                  alpha: torch.Tensor | None, bicubic: torch.Tensor) -> None:
    """What ``extras`` asks for besides the output: variants, weights, the curve, report.html's pictures."""
    stem, suffix = posixpath.splitext(output_path)
    if cfg.kernel == "estimate" and prep.picked.shown is not None:
        buf = io.BytesIO()  # the kernel the fit used, beside the output: a user's to reuse with --kernel
        np.save(buf, prep.picked.shown)
        write_atomic(f"{stem}_kernel.npy", buf.getvalue())
    elif storage.exists(f"{stem}_kernel.npy"):  # an earlier run's estimate: not this output's kernel
        storage.remove(f"{stem}_kernel.npy")
    if extras.save_variants:
        for name, v in result.variants.items():
            save_image(f"{stem}_{name}{suffix}", _as_picture(v, prep.pic, alpha))
    if extras.save_weights:
        save_weights(f"{stem}.safetensors", result.state_dict, cfg, prep.color.shape[0])
    curve = curve_csv(result).encode() if extras.save_curve or extras.report_dir else b""
    if extras.save_curve:
        write_atomic(f"{stem}_curve.csv", curve)
    if extras.report_dir:
        rel = picture_name(report_name(prep.input_path, extras))
        pictures = Path(extras.report_dir) / REPORT_PICTURES
        write_atomic(pictures / "curves" / f"{rel}.csv", curve)
        write_atomic(pictures / "curves" / f"{rel}.svg", curve_svg(result).encode())
        write_thumbs(pictures / "thumbs" / rel, prep.color, bicubic, result.output,
                     None if prep.gt is None else _tensor(prep.gt.color),
                     originals={"zssr": output_path, "gt": prep.gt_path})
        if prep.picked.shown is not None:
            write_kernel_pictures(pictures / "thumbs" / rel, prep.picked.shown, prep.picked.true)


def _notes(pic: Picture, output_path: str) -> list[str]:
    """What the row should say of the input's decoding and of what its output could not keep."""
    notes = list(pic.notes)
    suffix = posixpath.splitext(output_path)[1]
    if drops_alpha(pic, suffix):
        notes.append(f"its alpha channel is not in the output: a {suffix} has none")
    if pic.icc_profile and not keeps_profile(pic, suffix):
        notes.append(f"its colour profile is not in the output: a {pic.bit_depth}-bit {suffix} "
                     "is written without one")
    return notes


def finish(prep: Prepared, result: SRResult, output_path: str | Path, cfg: FitConfig, device: torch.device | str,
           extras: Extras = Extras(), compare_path: str | Path | None = None,
           max_pixels: int | None = None) -> dict[str, Any]:
    """Write the output (and what ``extras`` asks for), score it; returns the image's record.

    A fit that diverged (an output with NaN or inf) raises instead: nothing is written, and the image
    becomes a failed row rather than a black or garbage picture with a row that says ok."""
    if diverged(result):
        raise FloatingPointError("the fit diverged: its output is not finite (NaN or inf), so none was written; "
                                 "a lower learning rate may help")
    output_path = os.fspath(output_path)
    pic, color = prep.pic, prep.color
    out_hw = tuple(result.output.shape[-2:])
    alpha = None
    if pic.alpha is not None:  # alpha is not super-resolved: plain bicubic, clipped
        alpha = imresize(_tensor(pic.alpha).double(), cfg.scale, out_hw).clamp(0, 1).float()
    save_image(output_path, _as_picture(result.output, pic, alpha))
    output_stat = file_stamp(output_path)
    bicubic = imresize(color.double(), cfg.scale, out_hw).float()
    _write_extras(prep, result, output_path, cfg, extras, alpha, bicubic)
    gt = prep.gt
    h, w = pic.size
    record: dict[str, Any] = {
        "input": str(prep.input_path), "output": str(output_path), "gt": prep.gt_path,
        "scale": scale_label(cfg),
        "height": h, "width": w, "out_height": out_hw[0], "out_width": out_hw[1],
        "channels": pic.channels, "bit_depth": pic.bit_depth, "device": str(device),
        "notes": "; ".join(_notes(pic, output_path) + list(prep.picked.notes)),
        "started_at": timestamp(result.started_at) if result.started_at else None,
        "iterations": result.iterations, "fit_seconds": round(result.fit_seconds, 3),
        "infer_seconds": round(result.infer_seconds, 3), "config_hash": cfg.hash(), **prep.sources,
        "output_stat": output_stat, **prep.picked.row,
    }
    for prefix in ("", "bicubic_"):
        record.update({prefix + k: None for k in SCORE_KEYS})
    if gt is not None:
        border = int(round(max(cfg.scale)))
        record.update(score(result.output, gt.color, border))
        record.update({"bicubic_" + k: v for k, v in score(bicubic, gt.color, border).items()})
        if compare_path:
            cmp = load_image(compare_path, max_pixels)
            record.update({"comparison_" + k: v for k, v in score(cmp.color, gt.color, border).items()})
            record["psnr_ratio"] = record["psnr_y"] / record["comparison_psnr_y"]
    return record


def process_image(input_path: str | Path, output_path: str | Path, cfg: FitConfig, device: str = "auto",
                  gt_path: str | Path | None = None, compare_path: str | Path | None = None,
                  extras: Extras = Extras(), max_pixels: int | None = None,
                  degrade_input: bool = False, plan: MemoryPlan = MemoryPlan(),
                  faults: Faults | None = None, true_kernel: str | None = None) -> dict[str, Any]:
    """Upscale one file; returns a flat record of sizes, scores and timings (scores None without GT).

    With ``degrade_input`` the file is ground truth: the input is made from it by
    the MATLAB-bicubic ``degrade`` and the output is scored against it. ``faults`` (None: read
    from the environment, for callers outside a run) are the robustness tests' injected faults.
    """
    faults = Faults.from_env() if faults is None else faults
    faults.on_read(str(input_path))
    dev = pick_device(device)
    prep = prepare(input_path, cfg, gt_path, max_pixels, degrade_input, true_kernel, dev)
    stem = posixpath.splitext(os.fspath(output_path))[0]
    fault = faults.mid_fit(str(input_path))

    def hook(step: int, father: torch.Tensor, son: torch.Tensor) -> None:
        if fault and step == 1:
            fault(plan)
        if extras.save_pairs > 0 and step % extras.save_pairs == 0:
            for name, t in (("father", father), ("son", son)):
                save_image(f"{stem}_pairs/step{step:05d}_{name}.png", Picture(t.detach().cpu().numpy(), None, 8))

    use_hook = fault is not None or extras.save_pairs > 0
    result = super_resolve(prep.color, cfg, dev, prep.kernel, hook if use_hook else None, extras.save_variants, plan)
    return finish(prep, result, output_path, cfg, dev, extras, compare_path, max_pixels)


def diverged(result: SRResult) -> bool:
    """Whether a fit's output holds NaN or inf (a fit that diverged)."""
    return not bool(torch.isfinite(result.output).all())


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(err).lower()


def one_line(err: BaseException, path: str) -> str:
    """A failure as one line that names the file and the cause."""
    msg = " ".join(str(err).split()) or type(err).__name__
    if is_out_of_memory(err):
        msg = f"out of memory even with {msg}"
    elif isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        msg = f"{DISK_FULL}: {msg}"
    elif not isinstance(err, (ValueError, OSError)):
        msg = f"{type(err).__name__}: {msg}"
    return msg if path in msg else f"{path}: {msg}"


def run_item(item: WorkItem, cfg: FitConfig, device: str, extras: Extras = Extras(),
             max_pixels: int | None = None, degrade: bool = False,
             faults: Faults | None = None) -> dict[str, Any]:
    """``process_image`` that never raises for a bad image: failures come back as records.

    Out of memory (CUDA or host) is retried with smaller tiles and batches
    (1024 -> 512 -> 256 -> 128 pixel tiles) before the image is given up.
    """
    faults = Faults.from_env() if faults is None else faults
    row = item_row(item, cfg)
    plan = MemoryPlan()
    while True:
        try:
            done = process_image(item.input, item.output, cfg, device, item.gt, None, extras, max_pixels,
                                 degrade_input=degrade, plan=plan, faults=faults, true_kernel=item.true_kernel)
            return {**row.as_record(), **done, "status": "ok", "error": None, "tile": plan.tile}
        except Exception as e:  # noqa: BLE001 - every per-image failure becomes a row, the run goes on
            if is_out_of_memory(e):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                smaller = plan.smaller()
                if smaller is not None:
                    plan = smaller
                    continue
                e = MemoryError(f"{plan.tile}-pixel tiles ({' '.join(str(e).split())[:160]})")
            return failed(row, e)
