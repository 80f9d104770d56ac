"""What to upscale: a folder scan or a CSV/JSONL manifest, streamed as WorkItems.

Nothing here reads pixels. A folder is walked in sorted order (so reruns see
the same order), hidden files and folders skipped, symlinked folders followed
once (loops are cut), and the output folder never scanned even when it lies
inside the input folder. Ground truth is found three ways: ``--gt DIR`` by
relative path and stem (any extension), the authors' ``NAME_gt.png`` beside
``NAME.png``, and the benchmark layout ``HR/`` beside ``LR_bicubic/X<s>/``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .images import EXTENSIONS

# Manifest columns that are not engine settings.
ITEM_COLUMNS = ("input", "gt", "output", "preset")


@dataclass(frozen=True)
class WorkItem:
    input: str  # path of the image to upscale (with --degrade: the ground truth it is made from)
    output: str  # where the upscaled image goes
    gt: str | None = None
    rel: str = ""  # the input's path relative to the input root, for folders and reports
    preset: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # per-item engine settings (manifest columns)
    error: str | None = None  # set when the item is refused before any work (bad manifest row)
    key: str = ""  # names its row across runs (``plan.item_key``), set by the plan
    origin: str = ""  # where a manifest row came from ('list.csv line 3'), to name it in its errors


@dataclass
class ScanOptions:
    output_dir: Path
    glob: str | None = None
    extensions: tuple[str, ...] = EXTENSIONS
    recursive: bool = True
    suffix: str = ""
    ext: str | None = None  # output extension, e.g. ".png"; None = the input's
    gt_dir: Path | None = None
    scale: float | None = None  # picks LR_bicubic/X<s> in a benchmark folder
    degrade: bool = False
    keep_ext: bool = False  # keep the input's extension in the output's name where the two differ
    skipped: list[str] = field(default_factory=list)  # what the scan passed over, and why
    passed: Counter = field(default_factory=Counter)  # files passed over by reason: the answer to "no images"


def output_for(rel: str, opts: ScanOptions) -> Path:
    p = Path(rel)
    # GIF holds 256 colours: an upscaled GIF is written as PNG unless --ext says otherwise
    ext = opts.ext if opts.ext else (".png" if p.suffix.lower() == ".gif" else p.suffix)
    if ext and not ext.startswith("."):
        ext = "." + ext
    # b.png and b.gif both make b.png; with keep_ext the GIF's is b.gif.png
    stem = p.name if opts.keep_ext and p.suffix.lower() != ext.lower() else p.stem
    return opts.output_dir / p.parent / f"{stem}{opts.suffix}{ext}"


def _is_image(name: str, opts: ScanOptions) -> bool:
    return name.lower().endswith(tuple(e.lower() for e in opts.extensions))


def walk_images(root: Path, opts: ScanOptions) -> Iterator[Path]:
    """Image files under ``root`` in sorted order; hidden entries, the output folder and loops skipped."""
    out_real = os.path.realpath(opts.output_dir)
    seen: set[str] = set()

    def visit(d: Path) -> Iterator[Path]:
        real = os.path.realpath(d)
        if real in seen:
            opts.skipped.append(f"{d}: symlink loop, not followed again")
            return
        if real == out_real:
            opts.passed["the output folder"] += 1
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            opts.skipped.append(f"{d}: cannot list folder ({e.strerror})")
            return
        for entry in entries:
            if entry.name.startswith("."):
                opts.passed["hidden"] += 1
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if opts.recursive:
                    yield from visit(path)
                else:
                    opts.passed["in subfolders (--no-recursive)"] += 1
            elif not _is_image(entry.name, opts):
                opts.passed["not of an image extension"] += 1
            elif opts.glob and not path.relative_to(root).match(opts.glob):
                opts.passed[f"not matching --glob {opts.glob!r}"] += 1
            else:
                yield path

    yield from visit(root)


def _find_by_stem(folder: Path, rel: Path) -> Path | None:
    d = folder / rel.parent
    if not d.is_dir():
        return None
    for cand in sorted(d.glob(f"{glob_escape(rel.stem)}.*")):
        if cand.suffix.lower() in EXTENSIONS and cand.is_file():
            return cand
    return None


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def benchmark_layout(root: Path, scale: float | None) -> tuple[Path, Path] | None:
    """(LR folder, HR folder) when ``root`` is a benchmark set (``HR/`` + ``LR_bicubic/X<s>/``)."""
    if scale is None or not float(scale).is_integer():
        return None
    lr = root / "LR_bicubic" / f"X{int(scale)}"
    hr = root / "HR"
    return (lr, hr) if lr.is_dir() and hr.is_dir() else None


def why_nothing(root: Path, opts: ScanOptions) -> str:
    """Why a scan of ``root`` found no images, in one line."""
    if not opts.passed:
        return f"{root} is empty"
    parts = ", ".join(f"{n} {why}" for why, n in opts.passed.most_common())
    return f"no images to upscale in {root}: passed over {parts}"


def check_layout(root: Path, opts: ScanOptions) -> None:
    """Refuse a benchmark set (``HR/`` beside ``LR_bicubic/``) that has no inputs at the asked scale:
    without this, ``--scale 5`` upscaled HR/ and every LR folder x5 with no scores."""
    if opts.degrade or not root.is_dir() or not (root / "HR").is_dir() or not (root / "LR_bicubic").is_dir():
        return
    if benchmark_layout(root, opts.scale) is None:
        have = sorted(d.name for d in (root / "LR_bicubic").iterdir() if d.is_dir())
        asked = "this scale" if opts.scale is None else f"x{opts.scale:g}"
        raise ValueError(f"{root} is a benchmark set with LR_bicubic/{', '.join(have) or '(nothing)'} but no "
                         f"inputs at {asked}; give one of those scales, or --degrade to make inputs from HR/")


def scan_folder(root: Path, opts: ScanOptions) -> Iterator[WorkItem]:
    bench = None if opts.degrade else benchmark_layout(root, opts.scale)
    if opts.degrade and (root / "HR").is_dir() and (root / "LR_bicubic").is_dir():
        walk_root = root / "HR"  # degrade a benchmark set: its HR folder is the ground truth
    else:
        walk_root = bench[0] if bench else root
    for path in walk_images(walk_root, opts):
        rel = path.relative_to(root).as_posix()
        if path.stem.endswith("_gt") and _find_by_stem(path.parent, Path(path.stem[:-3] + path.suffix)):
            continue  # the authors' NAME_gt.png is the ground truth of NAME.png, not an input
        gt: Path | None = None
        if opts.degrade:
            gt = path
        elif bench:
            s = int(opts.scale)  # type: ignore[arg-type]
            stem = path.stem[: -len(f"x{s}")] if path.stem.endswith(f"x{s}") else path.stem
            gt = _find_by_stem(bench[1], Path(stem + path.suffix))
        elif opts.gt_dir:
            gt = _find_by_stem(opts.gt_dir, path.relative_to(root))
        else:
            gt = _find_by_stem(path.parent, Path(path.stem + "_gt" + path.suffix))
        yield WorkItem(str(path), str(output_for(rel, opts)), str(gt) if gt else None, rel)


def _coerce(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip()
        return None if v == "" else v
    return v


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) for each row of a .csv (header row) or .jsonl manifest, or (line, why)
    for a line that is not a row. A byte-order mark (spreadsheets save one) is skipped."""
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(2**31 - 1)  # a very long cell is the row's problem, not the whole run's
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row:
                    yield reader.line_num, f"{len(row[None])} more cell(s) than the header has columns"
                    continue
                yield reader.line_num, row
        return
    # A name that is not UTF-8 is read as the bytes it was (surrogate escapes), as a folder scan does.
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, f"not JSON ({e.msg} at column {e.colno})"
                continue
            if not isinstance(row, dict):
                yield n, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield n, row


def _overrides(row: dict[str, Any], knobs: set[str], where: str) -> tuple[tuple[tuple[str, Any], ...], str | None]:
    """The row's engine settings, each checked against its type now (a bad value fails its row
    here, naming the column, instead of failing later with Python's words), or an error."""
    from ..config import parse_value

    out = []
    for k, v in sorted(row.items()):
        if k not in knobs or v is None:
            continue
        try:
            # kept parsed: hashable, and one spelling per value ("2", 2 and 2.0 name one row's key)
            out.append((k, parse_value(k, v)))
        except (ValueError, TypeError) as e:
            detail = str(e).removeprefix(f"{k}: ")
            return (), f"{where}, column {k}: bad value {v!r} ({detail})"
    return tuple(out), None


def _path_cell(row: dict[str, Any], name: str, where: str) -> str | None:
    v = row.get(name)
    if v is None or isinstance(v, str):
        return v
    raise ValueError(f"{where}, column {name}: expected a path, got {type(v).__name__} {v!r}")


def read_manifest(path: Path, opts: ScanOptions) -> Iterator[WorkItem]:
    """Rows of a .csv (header row) or .jsonl manifest; relative paths are relative to the manifest.

    A row that cannot be used (no input, an unknown column, a value of the wrong type, a line
    that is not a JSON object) becomes an item with its error, naming the manifest, the line and
    the column: it fails its own row and the run goes on."""
    from ..config import FitConfig

    knobs = set(FitConfig.__dataclass_fields__)
    base = Path(os.path.abspath(path)).parent  # absolute: these paths go to actors that start elsewhere
    for n, row in _manifest_rows(path):
        where = f"{path.name} line {n}"
        if isinstance(row, str):
            yield WorkItem(where, "", error=f"{where}: {row}")
            continue
        row = {str(k).strip(): _coerce(v) for k, v in row.items() if k is not None}
        try:
            src, out, gt, preset = (_path_cell(row, c, where) for c in ("input", "output", "gt", "preset"))
        except ValueError as e:
            yield WorkItem(where, "", error=str(e))
            continue
        if not src:
            yield WorkItem(where, "", error=f"{where}: no 'input' column value")
            continue
        if any("\0" in c for c in (src, out, gt) if c):
            yield WorkItem(where, "", error=f"{where}: a path holds a NUL byte")
            continue
        src_path = Path(src) if Path(src).is_absolute() else base / src
        unknown = [k for k in row if k not in knobs and k not in ITEM_COLUMNS]
        if unknown:
            yield WorkItem(str(src_path), "", error=f"{where}: unknown column(s) {', '.join(unknown)}")
            continue
        if isinstance(row.get("kernel"), str) and not Path(row["kernel"]).is_absolute():
            row["kernel"] = str(base / row["kernel"])  # relative to the manifest, as its other paths
        overrides, bad = _overrides(row, knobs, where)
        if bad:
            yield WorkItem(str(src_path), "", error=bad)
            continue
        # rel names the item in the report (its folder, its thumbnails): never outside the manifest's folder
        rel = Path(src).as_posix() if not Path(src).is_absolute() and ".." not in Path(src).parts else Path(src).name
        if out:
            if Path(out).is_absolute() or ".." in Path(out).parts:
                yield WorkItem(str(src_path), "", error=f"{where}: output {out!r} escapes the output folder")
                continue
            out_path = opts.output_dir / out
        else:
            out_path = output_for(rel, opts)
        gt_path = None if not gt else (Path(gt) if Path(gt).is_absolute() else base / gt)
        if opts.degrade and not gt_path:
            gt_path = src_path
        error = None if src_path.exists() else f"{src_path}: no such file"
        yield WorkItem(str(src_path), str(out_path), str(gt_path) if gt_path else None, rel, preset, overrides,
                       error, origin=where)


def scan(input_path: Path, opts: ScanOptions) -> Iterator[WorkItem]:
    """Stream the work: a folder, a manifest, or one image file."""
    if input_path.is_dir():
        yield from scan_folder(input_path, opts)
    elif input_path.suffix.lower() in (".csv", ".jsonl"):
        yield from read_manifest(input_path, opts)
    elif input_path.is_file():
        gt = str(input_path) if opts.degrade else None
        yield WorkItem(str(input_path), str(output_for(input_path.name, opts)), gt, input_path.name)
    else:
        raise FileNotFoundError(f"{input_path}: no such file or folder")
