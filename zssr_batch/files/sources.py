"""What to upscale: a folder scan or a CSV/JSONL manifest, streamed as WorkItems.

Nothing here reads pixels. A folder is walked in sorted order (so reruns see
the same order), hidden files and folders skipped, symlinked folders followed
once (loops are cut), and the output folder never scanned even when it lies
inside the input folder. Ground truth is found three ways: ``--gt DIR`` by
relative path and stem (any extension), the authors' ``NAME_gt.png`` beside
``NAME.png``, and the benchmark layout ``HR/`` beside ``LR_<name>/X<s>/`` (``LR_bicubic``,
or a degradation whose kernels lie in ``kernels/X<s>/``, as ``degrade --random-kernels`` writes).
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from . import storage
from .images import EXTENSIONS

# Manifest columns that are not engine settings.
ITEM_COLUMNS = ("input", "gt", "output", "preset", "true_kernel")  # true_kernel: the kernel that made the input


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
    true_kernel: str | None = None  # the kernel that made this input, where known (a set's kernels/X<s>/, a manifest's true_kernel)


@dataclass
class ScanOptions:
    output_dir: str | Path  # a folder, or an object store's URL
    glob: str | None = None
    extensions: tuple[str, ...] = EXTENSIONS
    recursive: bool = True
    suffix: str = ""
    ext: str | None = None  # output extension, e.g. ".png"; None = the input's
    gt_dir: Path | None = None
    scale: float | None = None  # picks LR_<name>/X<s> in a benchmark folder
    degrade: bool = False
    keep_ext: bool = False  # keep the input's extension in the output's name where the two differ
    set_kernels: bool = True  # fit a set's inputs with the set's own kernels (False: --kernel was given)
    skipped: list[str] = field(default_factory=list)  # what the scan passed over, and why
    passed: Counter = field(default_factory=Counter)  # files passed over by reason: the answer to "no images"


def leaves_folder(rel: str) -> str | None:
    """How a path meant inside the output folder, relative to it, as written by hand (a manifest's
    ``output``, report.csv's ``output_rel``), would leave it: absolute, or with a ``..`` part (even
    one that comes back: no path the run makes has one); None where it does not. (A symlink in the
    folder that leads out is ``files.plan.inside``'s to find.)"""
    if Path(rel).is_absolute():
        return "is absolute: it is a path relative to the output folder"
    return "escapes the output folder" if ".." in Path(rel).parts else None


def output_for(rel: str, opts: ScanOptions) -> str:
    p = Path(rel)
    # GIF holds 256 colours: an upscaled GIF is written as PNG unless --ext says otherwise
    ext = opts.ext if opts.ext else (".png" if p.suffix.lower() == ".gif" else p.suffix)
    if ext and not ext.startswith("."):
        ext = "." + ext
    # b.png and b.gif both make b.png; with keep_ext the GIF's is b.gif.png
    stem = p.name if opts.keep_ext and p.suffix.lower() != ext.lower() else p.stem
    name = f"{stem}{opts.suffix}{ext}" if p.parent == Path(".") else f"{p.parent.as_posix()}/{stem}{opts.suffix}{ext}"
    return storage.join(os.fspath(opts.output_dir), name)


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


@dataclass(frozen=True)
class Benchmark:
    """A benchmark set's inputs at one scale: ``LR_<name>/X<s>/NAMEx<s>.png``, each with its ground
    truth ``HR/NAME.png`` and, for a degradation other than bicubic, its kernel in ``kernels/X<s>/``
    (``NAMEx<s>.npy``, or the authors' ``NAMEx<s>_0.mat``), as ``degrade --random-kernels`` writes."""

    lr: Path  # the inputs: LR_<name>/X<s>
    hr: Path  # the ground truths: HR
    kernels: Path | None  # kernels/X<s>; None for LR_bicubic (bicubic by its name) or a set without them
    scale: int


def lr_folders(root: Path) -> list[Path]:
    """The ``LR_<name>/`` folders of a benchmark set (``HR/`` beside them), sorted; none when
    ``root`` is not such a set."""
    if not (root / "HR").is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.name.startswith("LR_") and d.is_dir())


def is_lr_folder(root: Path) -> bool:
    """Whether ``root`` is one of a benchmark set's ``LR_<name>/`` folders (``HR/`` beside it)."""
    return root.name.startswith("LR_") and (root.parent / "HR").is_dir()


def own_scale(root: Path) -> int | None:
    """s when ``root`` is one of a benchmark set's ``LR_<name>/X<s>/`` folders, else None."""
    m = re.fullmatch(r"X([1-9][0-9]*)", root.name)
    return int(m[1]) if m and root.parent.name.startswith("LR_") and (root.parent.parent / "HR").is_dir() else None


def benchmark_layout(root: Path, scale: float | None) -> Benchmark | None:
    """The inputs at ``scale`` when ``root`` is a benchmark set or one of its ``LR_<name>/X<s>/``
    folders; None otherwise (``check_layout`` refuses a set without inputs at the scale). A set with
    inputs at the scale in two LR folders is refused: the user says which, by pointing at it."""
    if scale is None or not float(scale).is_integer():
        return None
    s = int(scale)
    if own_scale(root) == s:
        lr = root
    elif is_lr_folder(root):  # Set5/LR_bicubic: its X<s> (it used to be scanned whole, every scale at once)
        if not (root / f"X{s}").is_dir():
            return None
        lr = root / f"X{s}"
    else:
        found = [d / f"X{s}" for d in lr_folders(root) if (d / f"X{s}").is_dir()]
        if len(found) > 1:
            raise ValueError(f"{root} holds inputs at x{s} in {' and '.join(d.parent.name for d in found)}; "
                             f"give --input one of {', '.join(str(d) for d in found)}")
        if not found:
            return None
        lr = found[0]
    kernels = lr.parent.parent / "kernels" / f"X{s}"
    bicubic = lr.parent.name == "LR_bicubic"
    return Benchmark(lr, lr.parent.parent / "HR", kernels if kernels.is_dir() and not bicubic else None, s)


def why_nothing(root: Path, opts: ScanOptions) -> str:
    """Why a scan of ``root`` found no images, in one line."""
    if not opts.passed:
        return f"{root} is empty"
    parts = ", ".join(f"{n} {why}" for why, n in opts.passed.most_common())
    return f"no images to upscale in {root}: passed over {parts}"


def check_layout(root: Path, opts: ScanOptions) -> None:
    """Refuse a benchmark set (``HR/`` beside ``LR_<name>/``) that has no inputs at the asked scale
    (without this, ``--scale 5`` upscaled HR/ and every LR folder x5 with no scores), and a set's
    ``LR_<name>/X<s>/`` asked for another scale than its own (a forgotten ``--scale 4`` upscaled
    x4 inputs x2, unscored)."""
    if opts.degrade or not root.is_dir():
        return
    asked = "this scale" if opts.scale is None else f"x{opts.scale:g}"
    own = own_scale(root)
    if own is not None and opts.scale != own:
        raise ValueError(f"{root} holds the x{own} inputs of the benchmark set {root.parent.parent}, not inputs at "
                         f"{asked}; give --scale {own}")
    if is_lr_folder(root) and benchmark_layout(root, opts.scale) is None:
        have = ", ".join(sorted(x.name for x in root.iterdir() if x.is_dir())) or "nothing"
        raise ValueError(f"{root} holds {have} of the benchmark set {root.parent}, no inputs at {asked}; give one "
                         "of those scales")
    sets = lr_folders(root)
    if sets and benchmark_layout(root, opts.scale) is None:
        have = "; ".join(f"{d.name}/{', '.join(sorted(x.name for x in d.iterdir() if x.is_dir())) or '(nothing)'}"
                         for d in sets)
        raise ValueError(f"{root} is a benchmark set with {have} but no inputs at {asked}; give one of those "
                         "scales, or --degrade to make inputs from HR/")


def _benchmark_item(path: Path, root: Path, bench: Benchmark, opts: ScanOptions) -> WorkItem:
    """An input of a benchmark set, with its ground truth and (where the set has them) its kernel,
    as a manifest's ``kernel`` column gives one. Its output is named after the ground truth,
    ``SR/X<s>/NAME.png``, not after the LR file: an upscaled image under an LR name misleads."""
    r = path.relative_to(bench.lr)
    tag = f"x{bench.scale}"
    stem = r.stem[: -len(tag)] if r.stem.endswith(tag) and len(r.stem) > len(tag) else r.stem
    name = r.with_name(stem + r.suffix)
    gt = _find_by_stem(bench.hr, name)
    item = WorkItem(str(path), output_for(f"SR/X{bench.scale}/{name.as_posix()}", opts), str(gt) if gt else None,
                    path.relative_to(root).as_posix())
    if bench.kernels is None:
        return item
    looked = (bench.kernels / r.with_suffix(".npy"), bench.kernels / r.parent / f"{r.stem}_0.mat")
    kernel = next((k for k in looked if k.is_file()), None)
    if kernel is None and opts.set_kernels:  # the others have theirs: a bicubic fit would score the wrong degradation
        return replace(item, error=f"{path}: no kernel for it in {bench.kernels} (looked for "
                                               f"{looked[0].name} and {looked[1].name})")
    # absolute: the path goes to actors that start elsewhere
    if kernel is None:
        return item
    item = replace(item, true_kernel=os.path.abspath(kernel))
    return replace(item, overrides=(("kernel", item.true_kernel),)) if opts.set_kernels else item


def scan_folder(root: Path, opts: ScanOptions) -> Iterator[WorkItem]:
    bench = None if opts.degrade else benchmark_layout(root, opts.scale)
    if opts.degrade and lr_folders(root):
        walk_root = root / "HR"  # degrade a benchmark set: its HR folder is the ground truth
    else:
        walk_root = bench.lr if bench else root
    for path in walk_images(walk_root, opts):
        rel = path.relative_to(root).as_posix()
        if path.stem.endswith("_gt") and _find_by_stem(path.parent, Path(path.stem[:-3] + path.suffix)):
            continue  # the authors' NAME_gt.png is the ground truth of NAME.png, not an input
        if bench:
            yield _benchmark_item(path, root, bench, opts)
            continue
        gt: Path | None = None
        if opts.degrade:
            gt = path
        elif opts.gt_dir:
            gt = _find_by_stem(opts.gt_dir, path.relative_to(root))
        else:
            gt = _find_by_stem(path.parent, Path(path.stem + "_gt" + path.suffix))
        yield WorkItem(str(path), str(output_for(rel, opts)), str(gt) if gt else None, rel)


def scan_store(root: str, opts: ScanOptions) -> Iterator[WorkItem]:
    """A folder of an object store (``s3://bucket/photos``), as ``scan_folder`` walks a local one:
    sorted, hidden names and the output folder passed over, ground truth from ``--gt URL`` by
    relative path and stem, or the authors' ``NAME_gt`` beside ``NAME``. (The benchmark layout
    and --degrade of a benchmark set are for local folders.)"""
    root = root.rstrip("/")
    out = os.fspath(opts.output_dir).rstrip("/") + "/"
    keys = storage.listing(root)
    gts: dict[str, str] = {}
    if opts.gt_dir is not None:
        gt_root = os.fspath(opts.gt_dir).rstrip("/")
        for url in storage.listing(gt_root):
            rel = url[len(gt_root) + 1:]
            if _is_image(rel, opts):
                gts.setdefault(posixpath.splitext(rel)[0], url)
    by_stem = {rel_stem(k[len(root) + 1:]): k for k in keys}
    for url in keys:
        rel = url[len(root) + 1:]
        if url.startswith(out):
            opts.passed["the output folder"] += 1
        elif any(part.startswith(".") for part in rel.split("/")):
            opts.passed["hidden"] += 1
        elif not opts.recursive and "/" in rel:
            opts.passed["in subfolders (--no-recursive)"] += 1
        elif not _is_image(rel, opts):
            opts.passed["not of an image extension"] += 1
        elif opts.glob and not PurePosixPath(rel).match(opts.glob):
            opts.passed[f"not matching --glob {opts.glob!r}"] += 1
        elif rel_stem(rel).endswith("_gt") and rel_stem(rel)[:-3] in by_stem:
            continue  # the authors' NAME_gt.png is the ground truth of NAME.png, not an input
        else:
            stem = rel_stem(rel)
            gt = url if opts.degrade else gts.get(stem) if opts.gt_dir is not None else by_stem.get(stem + "_gt")
            yield WorkItem(url, output_for(rel, opts), gt, rel)


def rel_stem(rel: str) -> str:
    return posixpath.splitext(rel)[0]


def _coerce(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip()
        return None if v == "" else v
    return v


def _manifest_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) for each row of a .csv (header row) or .jsonl manifest, or (line, why)
    for a line that is not a row. A byte-order mark (spreadsheets save one) is skipped; a name that
    is not UTF-8 is read as the bytes it was (surrogate escapes), as a folder scan does."""
    text = storage.read_bytes(path).decode("utf-8-sig", errors="surrogateescape")
    if posixpath.splitext(os.fspath(path))[1].lower() == ".csv":
        csv.field_size_limit(2**31 - 1)  # a very long cell is the row's problem, not the whole run's
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            if None in row:
                yield reader.line_num, f"{len(row[None])} more cell(s) than the header has columns"
                continue
            yield reader.line_num, row
        return
    for n, line in enumerate(io.StringIO(text, newline=None), start=1):
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


def read_manifest(path: str | Path, opts: ScanOptions) -> Iterator[WorkItem]:
    """Rows of a .csv (header row) or .jsonl manifest; relative paths are relative to the manifest.

    A row that cannot be used (no input, an unknown column, a value of the wrong type, a line
    that is not a JSON object) becomes an item with its error, naming the manifest, the line and
    the column: it fails its own row and the run goes on."""
    from ..config import FitConfig

    knobs = set(FitConfig.__dataclass_fields__)
    path = os.fspath(path)
    # absolute: these paths go to actors that start elsewhere
    base = posixpath.dirname(path) if storage.is_url(path) else os.path.dirname(os.path.abspath(path))

    def at(p: str) -> str:  # a manifest's path, relative to the manifest
        return p if storage.is_url(p) or os.path.isabs(p) else storage.join(base, p)

    for n, row in _manifest_rows(path):
        where = f"{posixpath.basename(path)} line {n}"
        if isinstance(row, str):
            yield WorkItem(where, "", error=f"{where}: {row}")
            continue
        row = {str(k).strip(): _coerce(v) for k, v in row.items() if k is not None}
        try:
            src, out, gt, preset, true_kernel = (_path_cell(row, c, where)
                                                 for c in ("input", "output", "gt", "preset", "true_kernel"))
        except ValueError as e:
            yield WorkItem(where, "", error=str(e))
            continue
        if not src:
            yield WorkItem(where, "", error=f"{where}: no 'input' column value")
            continue
        if any("\0" in c for c in (src, out, gt) if c):
            yield WorkItem(where, "", error=f"{where}: a path holds a NUL byte")
            continue
        src_path = at(src)
        unknown = [k for k in row if k not in knobs and k not in ITEM_COLUMNS]
        if unknown:
            yield WorkItem(str(src_path), "", error=f"{where}: unknown column(s) {', '.join(unknown)}")
            continue
        kernel = row.get("kernel")
        if kernel is not None and not isinstance(kernel, str):  # e.g. JSON's 5, or a CSV's 5 read as one
            yield WorkItem(str(src_path), "", error=f"{where}, column kernel: expected a file, 'estimate' or "
                                                    f"'bicubic', got {kernel!r}")
            continue
        kernel_file = None
        if kernel == "bicubic":  # said out loud, as --kernel bicubic
            row["kernel"] = ""
        elif kernel not in (None, "", "estimate"):
            kernel_file = row["kernel"] = at(kernel)  # a file, relative to the manifest, as its other paths
        overrides, bad = _overrides(row, knobs, where)
        if bad:
            yield WorkItem(str(src_path), "", error=bad)
            continue
        # rel names the item in the report (its folder, its thumbnails): never outside the manifest's folder
        if storage.is_url(src) or Path(src).is_absolute() or ".." in Path(src).parts:
            rel = posixpath.basename(src)
        else:
            rel = Path(src).as_posix()
        if opts.glob and not PurePosixPath(src).match(opts.glob):  # as a folder's images, by the path written
            opts.passed[f"not matching --glob {opts.glob!r}"] += 1
            continue
        if out:
            how = leaves_folder(out)
            if how:
                yield WorkItem(str(src_path), "", error=f"{where}: output {out!r} {how}")
                continue
            out_path = storage.join(os.fspath(opts.output_dir), out)
        else:
            out_path = output_for(rel, opts)
        gt_path = at(gt) if gt else None
        if opts.degrade and not gt_path:
            gt_path = src_path
        true_path = at(true_kernel) if true_kernel else None
        error = next((f"{p}: no such file" if column == "input" else f"{where}, column {column}: {p}: no such file"
                      for column, p in (("input", src_path), ("kernel", kernel_file), ("true_kernel", true_path))
                      if p and not storage.exists(p)), None)
        yield WorkItem(src_path, out_path, gt_path, rel, preset, overrides,
                       error, origin=where, true_kernel=true_path)


def scan(input_path: str | Path, opts: ScanOptions) -> Iterator[WorkItem]:
    """Stream the work: a folder, a manifest, or one image file; each a local path or an object
    store's URL."""
    if storage.is_url(input_path):
        url = os.fspath(input_path)
        if posixpath.splitext(url)[1].lower() in (".csv", ".jsonl"):
            yield from read_manifest(url, opts)
        elif storage.isdir(url):
            yield from scan_store(url, opts)
        elif storage.exists(url):
            name = posixpath.basename(url)
            yield WorkItem(url, output_for(name, opts), url if opts.degrade else None, name)
        else:
            raise FileNotFoundError(f"{url}: no such object or folder")
        return
    input_path = Path(input_path)
    if input_path.is_dir():
        yield from scan_folder(input_path, opts)
    elif input_path.suffix.lower() in (".csv", ".jsonl"):
        yield from read_manifest(input_path, opts)
    elif input_path.is_file():
        gt = str(input_path) if opts.degrade else None
        yield WorkItem(str(input_path), output_for(input_path.name, opts), gt, input_path.name)
    else:
        raise FileNotFoundError(f"{input_path}: no such file or folder")
