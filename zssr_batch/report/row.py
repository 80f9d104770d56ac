"""The row schema: one ``Row`` field per ``report.csv`` column, and every list of columns derived from it.

A row is built in one place (``Row.of`` for what a work item tells, then what the fit adds), so
a column is named once: here. ``report.csv``'s header is the fields in order; the score lists
of the summary, the printed table and ``report.html`` are views of the fields by their ``kind``.
Rows travel between processes as plain dicts (``as_record``): the workers add keys as they learn
them, and a dict pickles and merges simply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..files.sources import WorkItem


def _col(kind: str = "") -> Any:
    """A column, empty until set; ``kind`` groups columns for the views below."""
    return field(default=None, metadata={"kind": kind})


@dataclass(frozen=True)
class Row:
    """One image's line of ``report.csv``; the field order is the column order (new columns go last,
    so that old reports still read)."""

    input: str | None = _col()  # the input's path (with --degrade: the ground truth the input is made from)
    output: str | None = _col()  # where the upscaled image was (or would have been) written
    gt: str | None = _col()  # the ground truth scored against, if any
    status: str | None = _col()  # 'ok' or 'failed'
    error: str | None = _col()  # why it failed, one line naming the file
    scale: str | None = _col()  # '2', or '2x1.5' (vertical x horizontal)
    height: int | None = _col("size")  # the LR input's size
    width: int | None = _col("size")
    out_height: int | None = _col("size")  # the output's size
    out_width: int | None = _col("size")
    psnr_rgb: float | None = _col("score")  # ZSSR against the ground truth (None without one)
    ssim_rgb: float | None = _col("score")
    psnr_y: float | None = _col("score")
    ssim_y: float | None = _col("score")
    bicubic_psnr_rgb: float | None = _col("bicubic")  # bicubic upscaling against the ground truth
    bicubic_ssim_rgb: float | None = _col("bicubic")
    bicubic_psnr_y: float | None = _col("bicubic")
    bicubic_ssim_y: float | None = _col("bicubic")
    iterations: int | None = _col("work")  # training steps the fit took
    fit_seconds: float | None = _col("work")  # training time
    infer_seconds: float | None = _col("work")  # ensemble and back-projection time (in a pack: from its last step to its output on the host)
    node: str | None = _col()  # the Ray node the worker ran on (12 characters of its id)
    gpu: str | None = _col()  # the GPU ids Ray gave the worker, comma-separated
    attempts: int | None = _col()  # the times a worker started the image (deaths retried)
    config_hash: str | None = _col()  # FitConfig.hash(): what the output depends on; resume keys on it
    host: str | None = _col()  # the worker's host name
    device: str | None = _col()  # the torch device it ran on
    channels: int | None = _col()  # the input's colour channels
    bit_depth: int | None = _col()  # the input's bits per channel
    preset: str | None = _col()  # the preset the image's settings start from
    started_at: str | None = _col()  # when its fit began (in a pack: when a slot took it; ``timestamp``)
    finished_at: str | None = _col()  # when its row was ready
    rel: str | None = _col()  # the input's path relative to the input root (names curves and thumbnails)
    tile: int | None = _col()  # the inference tile that fitted in memory
    pack: int | None = _col()  # fits trained together with it (1: alone)
    notes: str | None = _col()  # what the decoder or the pack noted, '; '-separated
    pack_way: str | None = _col()  # how its pack ran, e.g. 'triton+pad8+bf16' (``run.batch.pack_way``); empty alone
    key: str | None = _col()  # names the row across runs: the resolved input and its own settings (files.plan)
    input_sha256: str | None = _col()  # the input file's content when it was read (resume: unchanged?)
    input_stat: str | None = _col()  # its stamp then (files.storage.stamp): the cheap first check before hashing again
    gt_sha256: str | None = _col()  # the same for the ground truth
    gt_stat: str | None = _col()
    output_stat: str | None = _col()  # the output's stamp when written: resume knows another run wrote over it
    # The kernel the fit downscaled with (``run.kernel``): bicubic's too, where the scale is an integer.
    kernel_source: str | None = _col()  # 'given', 'estimated', 'bicubic fallback' (estimate not trusted) or 'bicubic'
    kernel_width: float | None = _col("kernel")  # mean principal std (HR pixels) of its positive part
    kernel_anisotropy: float | None = _col("kernel")  # larger principal std over the smaller
    kernel_error: float | None = _col("kernel")  # |k - true| / |true|, both centred; where the true kernel is known
    kernel_lr_psnr: float | None = _col("kernel")  # PSNR-Y (dB) of the input remade from the ground truth with it
    kernel_seconds: float | None = _col("kernel")  # estimating it (--kernel estimate)
    # The output's path inside the folder of report.csv (``report.table``, for a local output there): a
    # folder moved whole (``mv``) finds its outputs, and resumes, at its new place.
    output_rel: str | None = _col()

    @classmethod
    def of(cls, item: WorkItem, **known: Any) -> "Row":
        """The row of ``item`` with what else is ``known`` of it so far; the rest empty."""
        return cls(input=item.input, output=item.output, gt=item.gt, rel=item.rel, key=item.key or None, **known)

    def failed(self, error: str) -> "Row":
        """This row as a failure for ``error``."""
        return replace(self, status="failed", error=error)

    def as_record(self) -> dict[str, Any]:
        """Every column as a dict key (None where empty)."""
        return {name: getattr(self, name) for name in COLUMNS}


def _kind(kind: str) -> list[str]:
    return [f.name for f in fields(Row) if f.metadata["kind"] == kind]


COLUMNS = [f.name for f in fields(Row)]  # report.csv's header
SCORE_KEYS = _kind("score")  # what engine.metrics.score gives: psnr_rgb, ssim_rgb, psnr_y, ssim_y
SCORES = SCORE_KEYS + _kind("bicubic")  # ZSSR's, then bicubic's
WORK = _kind("work")  # iterations and times
SIZES = _kind("size")
KERNEL = _kind("kernel")  # the kernel's numbers: not in summary.csv, so that reports from before them still read
assert _kind("bicubic") == ["bicubic_" + k for k in SCORE_KEYS]
# The views of summaries put the Y channel (the figure papers quote) before RGB.
Y_FIRST = sorted(SCORE_KEYS, key=lambda k: not k.endswith("_y"))
Y_SCORES = [k for k in Y_FIRST if k.endswith("_y")]
# summary.csv's means: each score beside bicubic's (and, for Y, the gain), then the work.
SUMMARY_MEANS = [c for k in Y_FIRST for c in (k, "bicubic_" + k, *(["gain_" + k] if k in Y_SCORES else []))] \
    + WORK
# The printed table: Y scores beside bicubic's (and the PSNR gain), and the fit time.
TABLE_MEANS = [c for k in Y_SCORES for c in (k, "bicubic_" + k, *(["gain_" + k] if k.startswith("psnr") else []))] \
    + ["fit_seconds"]
# report.html's numbers per image: Y scores with bicubic's, RGB scores, the work, the sizes, the kernel.
PAGE_NUMBERS = [c for k in Y_FIRST for c in ((k, "bicubic_" + k) if k in Y_SCORES else (k,))] \
    + ["fit_seconds", "infer_seconds", "iterations"] + SIZES + ["kernel_width", "kernel_anisotropy", "kernel_error"]
assert set(SUMMARY_MEANS) - set(COLUMNS) <= {"gain_" + k for k in Y_SCORES} and set(PAGE_NUMBERS) <= set(COLUMNS)


def timestamp(t: float) -> str:
    """``started_at`` and ``finished_at``'s format (and run.json's): local time to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
