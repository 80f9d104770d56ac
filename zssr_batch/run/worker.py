"""One file in, one upscaled file out, scored: what ``fit`` does, and what each Ray actor will do.

load -> fit -> infer -> write the output atomically -> score against the
ground truth (and an optional comparison image such as an EDSR result).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..config import FitConfig
from ..files.degrade import degrade_picture
from ..engine.super_resolve import SRResult, pick_device, super_resolve
from ..engine.infer import MemoryPlan
from ..files.images import Picture, image_size, load_image, save_image, write_atomic
from ..engine.kernels import load_kernel
from ..engine.metrics import score
from ..report.plots import lines
from ..engine.resize import imresize, output_size
from ..report.thumbs import write_thumbs
from ..files.weights import save_weights

SCORE_KEYS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")
MIN_SIDE = 8  # below this a 3x3 network and an 11x11 SSIM window have nothing to work on


@dataclass(frozen=True)
class Extras:
    """What to keep besides the output (all beside it, named after it)."""

    save_weights: bool = False
    save_pairs: int = 0  # every Nth training pair as PNGs; 0 = none
    save_variants: bool = False  # single pass, mean and median ensembles
    save_curve: bool = False  # per-step loss and learning rate as CSV
    rel: str | None = None  # the input's relative path, set per item by the run
    report_dir: str | None = None  # a run's folder: curves/<rel>.csv|svg and thumbs/<rel>/ for report.html

    def for_item(self, item: dict[str, Any]) -> "Extras":
        """These extras for one work item (its ``rel`` names its curve and thumbnails)."""
        return dataclasses.replace(self, rel=item.get("rel") or None)


def scale_label(cfg: FitConfig) -> str:
    """'2' for a uniform scale, '2x1.5' (vertical x horizontal) otherwise: the report's ``scale``."""
    sv, sh = cfg.scale
    return f"{sv:g}" if sv == sh else f"{sv:g}x{sh:g}"


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def report_name(input_path: Path, extras: Extras) -> str:
    """The input's path relative to the run (its ``rel``), naming its curve and thumbnails."""
    return extras.rel or input_path.name


def curve_csv(result: SRResult) -> str:
    log = result.log
    rec = dict(zip(log.test_steps, log.rec_mse))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "scale_step", "loss", "lr", "reconstruction_mse"])
    for i, (loss, lr, st) in enumerate(zip(log.loss, log.lr, log.scale_step)):
        w.writerow([i, st, f"{loss:.6g}", f"{lr:.3g}", f"{rec[i]:.6g}" if i in rec else ""])
    return buf.getvalue()


def curve_svg(result: SRResult) -> str:
    log = result.log
    steps = list(range(len(log.loss)))
    loss = lines([("L1 loss", steps, log.loss), ("reconstruction MSE", log.test_steps, log.rec_mse)],
                 w=300, h=150, xlabel="step", log_y=True, title="loss")
    rate = lines([("learning rate", steps, log.lr)], w=300, h=110, xlabel="step", log_y=True, title="learning rate")
    body = loss.replace("<svg ", '<svg y="0" ', 1) + rate.replace("<svg ", '<svg y="150" ', 1)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="260" viewBox="0 0 300 260">{body}</svg>'


def _as_picture(color: torch.Tensor, like: Picture, alpha: torch.Tensor | None) -> Picture:
    return Picture(color.numpy(), None if alpha is None else alpha.numpy(), like.bit_depth, like.icc_profile)


@dataclass
class Prepared:
    """An input read and checked, ready to fit: what ``finish`` needs to write and score it."""

    input_path: Path
    pic: Picture  # the LR input
    gt: Picture | None
    gt_path: str | None
    color: torch.Tensor  # (C, h, w) the engine's input
    kernel: np.ndarray | None


def prepare(input_path: str | Path, cfg: FitConfig, gt_path: str | Path | None = None,
            max_pixels: int | None = None, degrade_input: bool = False) -> Prepared:
    """Read (and with ``degrade_input`` make) the input and its ground truth; raises on bad input."""
    input_path = Path(input_path)
    pic = load_image(input_path, max_pixels)
    gt_pic = None
    if degrade_input:
        gt_pic = pic
        pic = degrade_picture(pic, max(cfg.scale))
    h, w = pic.size
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{input_path}: image {w}x{h} is smaller than the minimum {MIN_SIDE}x{MIN_SIDE}")
    if gt_pic is None and gt_path:
        gt_pic = load_image(gt_path, max_pixels)
    kernel = load_kernel(cfg.kernel) if cfg.kernel else None
    gt_name = str(input_path) if degrade_input else (str(gt_path) if gt_path else None)
    return Prepared(input_path, pic, gt_pic, gt_name, _tensor(pic.color), kernel)


def finish(prep: Prepared, result: SRResult, output_path: str | Path, cfg: FitConfig, device: torch.device | str,
           extras: Extras = Extras(), compare_path: str | Path | None = None,
           max_pixels: int | None = None) -> dict[str, Any]:
    """Write the output (and what ``extras`` asks for), score it; returns the image's record.

    A fit that diverged (an output with NaN or inf) raises instead: nothing is written, and the image
    becomes a failed row rather than a black or garbage picture with a row that says ok."""
    if diverged(result):
        raise FloatingPointError("the fit diverged: its output is not finite (NaN or inf), so none was written; "
                                 "a lower learning rate may help")
    output_path = Path(output_path)
    stem = output_path.with_suffix("")
    pic, color = prep.pic, prep.color
    out_hw = tuple(result.output.shape[-2:])
    alpha = None
    if pic.alpha is not None:  # alpha is not super-resolved: plain bicubic, clipped
        alpha = imresize(_tensor(pic.alpha).double(), cfg.scale, out_hw).clamp(0, 1).float()
    save_image(output_path, _as_picture(result.output, pic, alpha))
    if extras.save_variants:
        for name, v in result.variants.items():
            save_image(f"{stem}_{name}{output_path.suffix}", _as_picture(v, pic, alpha))
    if extras.save_weights:
        save_weights(f"{stem}.safetensors", result.state_dict, cfg, color.shape[0])
    curve = curve_csv(result).encode() if extras.save_curve or extras.report_dir else b""
    if extras.save_curve:
        write_atomic(f"{stem}_curve.csv", curve)
    bicubic = imresize(color.double(), cfg.scale, out_hw).float()
    gt = prep.gt
    if extras.report_dir:
        rel = report_name(prep.input_path, extras)
        write_atomic(Path(extras.report_dir) / "curves" / f"{rel}.csv", curve)
        write_atomic(Path(extras.report_dir) / "curves" / f"{rel}.svg", curve_svg(result).encode())
        write_thumbs(Path(extras.report_dir) / "thumbs" / rel, color, bicubic, result.output,
                     None if gt is None else _tensor(gt.color))
    h, w = pic.size
    record: dict[str, Any] = {
        "input": str(prep.input_path), "output": str(output_path), "gt": prep.gt_path,
        "scale": scale_label(cfg),
        "height": h, "width": w, "out_height": out_hw[0], "out_width": out_hw[1],
        "channels": pic.channels, "bit_depth": pic.bit_depth, "device": str(device), "notes": "; ".join(pic.notes),
        "iterations": result.iterations, "fit_seconds": round(result.fit_seconds, 3),
        "infer_seconds": round(result.infer_seconds, 3), "config_hash": cfg.hash(),
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
                  degrade_input: bool = False, plan: MemoryPlan = MemoryPlan()) -> dict[str, Any]:
    """Upscale one file; returns a flat record of sizes, scores and timings (scores None without GT).

    With ``degrade_input`` the file is ground truth: the input is made from it by
    the MATLAB-bicubic ``degrade`` and the output is scored against it.
    """
    injected_crash_on_read(str(input_path))
    prep = prepare(input_path, cfg, gt_path, max_pixels, degrade_input)
    dev = pick_device(device)
    stem = Path(output_path).with_suffix("")
    fault = injected_fault(str(input_path))

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


def _fault_spec() -> tuple[str, str, str]:
    """ZSSR_BATCH_FAULT as (kind, SUBSTR, MARKER), empty strings where not given."""
    kind, _, rest = os.environ.get("ZSSR_BATCH_FAULT", "").partition(":")
    substr, _, marker = rest.partition(":")
    return kind, substr, marker


def injected_fault(path: str):
    """Fault injection for the robustness tests, off unless ZSSR_BATCH_FAULT is set.

    ``oom:SUBSTR`` raises an out-of-memory error mid-fit for inputs whose path
    contains SUBSTR while the memory plan still has tiles of 512 or more;
    ``kill:SUBSTR:MARKER`` SIGKILLs the worker process mid-fit the first time
    (while the file MARKER does not exist yet), as a segfault or node loss would.
    """
    kind, substr, marker = _fault_spec()
    if not kind or not substr or substr not in path:
        return None

    def fault(plan: MemoryPlan) -> None:
        if kind == "oom" and plan.tile >= 512:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        if kind == "kill" and marker and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

    return fault


def injected_crash_on_read(path: str) -> None:
    """``kill-on-read:SUBSTR`` SIGKILLs the worker the moment it starts reading an input whose path
    contains SUBSTR, every time: a poison image, as a decoder that segfaults on it would be."""
    kind, substr, _ = _fault_spec()
    if kind == "kill-on-read" and substr and substr in path:
        os.kill(os.getpid(), signal.SIGKILL)


def injected_divergence(path: str, result: SRResult) -> None:
    """``diverge-in-pack:SUBSTR`` turns the packed fit of an input whose path contains SUBSTR to NaN,
    as a pack's own fault would (on the H100, 2026-11-27, a recording did it to a whole pack)."""
    kind, substr, _ = _fault_spec()
    if kind == "diverge-in-pack" and substr and substr in path:
        result.output.fill_(float("nan"))


def injected_slow_restart() -> None:
    """With ``kill:SUBSTR:MARKER`` injected and the worker already killed (MARKER exists), a worker
    that starts sleeps ``ZSSR_BATCH_FAULT_RESTART_S`` seconds first: a slow restart, as a GPU
    worker's on a busy node, while the driver already has work to hand it again."""
    kind, _, marker = _fault_spec()
    if kind == "kill" and marker and os.path.exists(marker):
        time.sleep(float(os.environ.get("ZSSR_BATCH_FAULT_RESTART_S", "0")))


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(err).lower()


def one_line(err: BaseException, path: str) -> str:
    """A failure as one line that names the file and the cause."""
    msg = " ".join(str(err).split()) or type(err).__name__
    if is_out_of_memory(err):
        msg = f"out of memory even with {msg}"
    elif not isinstance(err, (ValueError, OSError)):
        msg = f"{type(err).__name__}: {msg}"
    return msg if path in msg else f"{path}: {msg}"


def _base_record(item: dict[str, Any], cfg: FitConfig) -> dict[str, Any]:
    return {"input": item["input"], "output": item["output"], "gt": item.get("gt"), "rel": item.get("rel"),
            "config_hash": cfg.hash(), "scale": scale_label(cfg)}


def _failed(record: dict[str, Any], err: BaseException) -> dict[str, Any]:
    record["status"], record["error"] = "failed", one_line(err, record["input"])
    return record


def run_item(item: dict[str, Any], cfg: FitConfig, device: str, extras: Extras = Extras(),
             max_pixels: int | None = None, degrade: bool = False) -> dict[str, Any]:
    """``process_image`` that never raises for a bad image: failures come back as records.

    Out of memory (CUDA or host) is retried with smaller tiles and batches
    (1024 -> 512 -> 256 -> 128 pixel tiles) before the image is given up.
    """
    record = _base_record(item, cfg)
    plan = MemoryPlan()
    while True:
        try:
            record.update(process_image(item["input"], item["output"], cfg, device, item.get("gt"), None, extras,
                                        max_pixels, degrade_input=degrade, plan=plan))
            record["status"], record["error"], record["tile"] = "ok", None, plan.tile
            return record
        except Exception as e:  # noqa: BLE001 - every per-image failure becomes a row, the run goes on
            if is_out_of_memory(e):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                smaller = plan.smaller()
                if smaller is not None:
                    plan = smaller
                    continue
                e = MemoryError(f"{plan.tile}-pixel tiles ({' '.join(str(e).split())[:160]})")
            return _failed(record, e)


def largest_input(items: list[dict[str, Any]], cfg: FitConfig, degrade: bool = False) -> tuple[int, int] | None:
    """The largest (h, w) among the inputs, from their headers only (files that cannot be read are skipped:
    they fail with their own row later); with ``degrade`` the size after shrinking."""
    best = None
    for item in items:
        size = image_size(item["input"])
        if size is None:
            continue
        h, w = size
        if degrade:
            h, w = output_size((h, w), (1 / cfg.scale[0], 1 / cfg.scale[1]))
        if best is None or h * w > best[0] * best[1]:
            best = (h, w)
    return best


def run_packed(items: list[dict[str, Any]], cfgs: list[FitConfig], device: str, extras: Extras = Extras(),
               max_pixels: int | None = None, degrade: bool = False, pack: int = 0,
               precision: str = "bf16", announce: bool = False) -> Iterator[tuple[Any, dict[str, Any] | None]]:
    """Fit a batch of images K at a time (see ``pack.packed``); yields (index, record) as each one is written.

    With ``announce`` it also yields ([index, ...], None) before it starts decoding those images, and
    decodes them only once the caller asks for the next item: a worker that dies is then known to
    have started only the images it announced (``driver.after_death``).

    The pack runs in its own thread; inputs are decoded by two threads ahead of
    it and each finished image is written and scored by another, so the device
    never waits on files and a row is yielded the moment its image is written.
    The pack starts training with its first decoded image, and a slot whose
    next image is still decoding waits empty while the others train.
    If the pack runs out of memory, the images it had not finished are fitted
    one by one with ``run_item``, which has the smaller-tiles plan.
    """
    from ..pack.size import plan_pack
    from ..pack.jobs import Job
    from ..pack.loop import fit_packed
    from ..pack.options import PackOptions

    dev = pick_device(device)
    readers, writer = ThreadPoolExecutor(2), ThreadPoolExecutor(1)
    events: queue.Queue = queue.Queue()  # ("row", i, record) | ("start", [i, ...], gate) | ("end", error or None)
    stop = threading.Event()
    options = PackOptions(bf16=precision == "bf16")
    k, options = (pack, options) if pack else plan_pack(cfgs[0], dev, largest_input(items, cfgs[0], degrade),
                                                        len(items), options)

    def read(indices: list[int]) -> dict[int, Any]:
        """Start decoding; with ``announce``, only once the caller has been told (the gate opens)."""
        gate = threading.Event()
        if announce:
            events.put(("start", indices, gate))
        else:
            gate.set()

        def decode(i: int) -> Prepared:
            while not gate.wait(0.1):
                if stop.is_set():
                    raise RuntimeError("the call was closed")
            injected_crash_on_read(items[i]["input"])
            return prepare(items[i]["input"], cfgs[i], items[i].get("gt"), max_pixels, degrade)

        return {i: readers.submit(decode, i) for i in indices}

    def jobs() -> Iterator[Job | None]:
        ahead = k + 4  # decoded images wait in host memory: enough to refill the pack, no more
        decoding = read(list(range(min(ahead, len(items)))))
        for i in range(len(items)):
            if stop.is_set():
                return
            while not decoding[i].done():  # the pack trains what it has meanwhile (None: nothing ready)
                yield None
                if stop.is_set():
                    return
            fut = decoding.pop(i)
            if i + ahead < len(items):
                decoding.update(read([i + ahead]))
            try:
                prep = fut.result()
            except Exception as e:  # noqa: BLE001 - a bad input is a row, the batch goes on
                events.put(("row", i, _failed(_base_record(items[i], cfgs[i]), e)))
                continue
            fault = injected_fault(items[i]["input"])
            if fault:
                fault(MemoryPlan())
            yield Job((i, prep), prep.color, cfgs[i], prep.kernel)

    def write(i: int, prep: Prepared, result: SRResult) -> None:
        record = _base_record(items[i], cfgs[i])
        try:
            injected_divergence(items[i]["input"], result)
            refit = diverged(result)
            if refit:
                # Fitted again alone (eager, fp32, one-image mode's path): a pack's own fault (a bf16
                # overflow, or a bug as on 2026-11-27) is then not the image's. A fit that diverges
                # alone as well fails its row in ``finish``.
                result = super_resolve(prep.color, cfgs[i], dev, prep.kernel)
            record.update(finish(prep, result, items[i]["output"], cfgs[i], dev, extras.for_item(items[i]), None,
                                 max_pixels))
            if refit:
                record["notes"] = "; ".join(n for n in (record["notes"], "its packed fit diverged: fitted again alone")
                                            if n)
            record.update(status="ok", error=None, tile=MemoryPlan().tile, pack=1 if refit else k)
        except Exception as e:  # noqa: BLE001
            _failed(record, e)
        events.put(("row", i, record))

    def fit_all() -> None:
        try:
            # A closed call (cancelled, or its caller gone) stops the pack at once instead of fitting
            # the images in its slots for nobody, beside the actor's next call on the same device.
            for (i, prep), result in fit_packed(jobs(), k, dev, options=options, stop=stop.is_set):
                writer.submit(write, i, prep, result)
            events.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            events.put(("end", e))

    fitter = threading.Thread(target=fit_all, name="zssr-pack", daemon=True)
    fitter.start()
    answered: set[int] = set()
    announced: set[int] = set()

    def hand_on(event: tuple) -> Iterator[tuple[Any, dict[str, Any] | None]]:
        """A start notice (then its decodes may begin) or a row, to the caller."""
        kind, i, rest = event
        if kind == "start":
            announced.update(i)
            yield i, None  # under Ray's backpressure of 1 this returns once the driver has it
            rest.set()
        else:
            answered.add(i)
            yield i, rest

    try:
        while True:
            event = events.get()
            if event[0] != "end":
                yield from hand_on(event)
                continue
            error = event[1]
            writer.shutdown(wait=True)  # every fitted image's row is queued after this
            while not events.empty():
                yield from hand_on(events.get())
            break
        if error is not None:
            if not is_out_of_memory(error):
                raise error
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            for i in range(len(items)):
                if i not in answered:
                    if announce and i not in announced:
                        yield [i], None
                    yield i, run_item(items[i], cfgs[i], device, extras.for_item(items[i]), max_pixels, degrade)
    finally:
        stop.set()
        readers.shutdown(wait=False, cancel_futures=True)
        writer.shutdown(wait=False)
