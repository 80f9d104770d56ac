"""The output plan: every path a run will write, decided and checked before any work.

A run that lets two inputs write one output reports both as ok while one result is gone, and
a rerun never repairs it; a path that leaves ``--output`` (through a symlink already in it, a
``../`` in a name) writes where the user never asked. So the whole list of items is planned
first: each item's output is made absolute, proven to resolve inside the output folder
(symlinks resolved) or the item is refused with its own error, and any two items that would
share an output, or be one item listed twice, stop the run before the first fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import storage
from .images import EXTENSIONS
from .sources import WorkItem

# report.html's pictures (thumbnails, curves) go under this folder of --output, named after each
# output: hidden, so no folder scan can put an input's output there, and refused to manifests.
REPORT_PICTURES = ".report"
# What the run itself writes at the top of --output: no input's output may take these names.
RESERVED = ("report.csv", "summary.csv", "run.json", "report.html", REPORT_PICTURES, ".zssr-batch.lock")


# The longest name a picture adds to its output's name (``.svg``, ``.csv``), within a file system's
# 255 bytes a name.
NAME_MAX, PICTURE_SUFFIX = 255, 4


def picture_name(rel: str) -> str:
    """The name of an output's report pictures (``.report/curves/<name>.svg``, ``.report/thumbs/<name>/``):
    its path relative to --output, the last part cut and told apart by a hash where the suffix
    would make it longer than a file system allows (a 252-byte output's curve failed its row)."""
    head, _, last = rel.rpartition("/")
    raw = os.fsencode(last)
    if len(raw) + PICTURE_SUFFIX <= NAME_MAX:
        return rel
    digest = hashlib.sha256(raw).hexdigest()[:16]
    short = os.fsdecode(raw[: NAME_MAX - PICTURE_SUFFIX - len(digest) - 1])
    return f"{head}/{short}~{digest}" if head else f"{short}~{digest}"


class PlanError(ValueError):
    """The run cannot start as asked (two inputs, one output): one line naming both."""


@dataclass(frozen=True)
class Plan:
    items: list[WorkItem]  # in scan order; paths absolute, keys set; a refused item carries its error
    output_dir: str  # resolved


def item_key(item: WorkItem) -> str:
    """What names one piece of work in report.csv across runs: the resolved input and its own
    settings (preset and manifest overrides). ``dir`` and ``/abs/dir`` give the same key; one
    input at two scales gives two."""
    settings = json.dumps([item.preset, [list(kv) for kv in item.overrides]], default=str)
    return f"{resolved(item.input)} {settings}" if item.overrides or item.preset else resolved(item.input)


file_stamp = storage.stamp  # what resume compares first, before hashing (50,000 inputs stat in a second)


def unchanged(path: str | os.PathLike, stamp: str | None, sha256: str | None) -> bool:
    """Whether the file at ``path`` still holds what a row recorded of it: the same stamp, or, when
    the stamp moved (a copy, a touch), the same content."""
    if not stamp or not sha256:
        return False
    try:
        return _same_stamp(path, file_stamp(path), stamp) or storage.sha256(path) == sha256
    except OSError:
        return False


def _same_stamp(path: str | os.PathLike, now: str, then: str) -> bool:
    """The whole stamp, ctime included (a moved ctime only costs a hash: a chmod, a hard link); a
    local stamp kept before it held the inode ('size:mtime_ns:ctime_ns') on its three parts, so
    that a report of an earlier version does not hash every input again."""
    return now == then or (not storage.is_url(path) and then.count(":") == 2 and now.rsplit(":", 1)[0] == then)


def output_changed(path: str | os.PathLike, stamp: str | None) -> str | None:
    """Why the file at ``path`` is no longer the output a row wrote, whose stamp it kept
    (``output_stat``); None while it is, or where the row kept none (made before stamps were:
    taken at its word). Raises OSError where the file is gone.

    A local output is its size, its mtime to the nanosecond and its inode: any write moves the
    mtime, and another run (``write_atomic``) or an editor that saves by renaming replaces the file
    (a new inode, even within the file system's clock tick). Not its ctime, which metadata alone
    moves, the image untouched: chmod, chown, an ACL or an xattr, a new hard link (``cp -al``, a
    snapshot) — no row keeps a hash of its output that would prove the file the same, so each of
    those fitted it again. ``mv`` on one file system keeps all three; a copy is another inode
    (``cp -a`` keeps the mtime), and so is a move to another file system. A stamp kept before the
    inode was ('size:mtime_ns:ctime_ns') is compared on size and mtime. An object: its whole
    stamp (size and ETag)."""
    now = file_stamp(path)
    if not stamp or now == stamp:
        return None
    if storage.is_url(path):
        return "written over since"
    size, mtime, _, ino = now.split(":")
    was = stamp.split(":")
    if was[:2] != [size, mtime]:
        return "written over (or touched) since"
    if len(was) > 3 and was[3] != ino and "0" not in (was[3], ino):  # (0: a file system with no inodes)
        return "replaced since by another file, or a copy"
    return None


def resolved(path: str) -> str:
    """A path with its symlinks and ``..`` resolved (as far as they exist); a URL as it is."""
    return path.rstrip("/") if storage.is_url(path) else os.path.realpath(path)


def absolute(path: str) -> str:
    """A path made absolute (one meaning on every node, whatever its working directory); a URL as it is."""
    return path if storage.is_url(path) else os.path.abspath(path)


def inside(path: str | os.PathLike, root_real: str) -> bool:
    """Whether ``path`` resolves (symlinks and ``..`` followed, as far as they exist) inside
    ``root_real``, itself resolved. In an object store, a key under the folder's prefix with no
    ``..`` part."""
    path = os.fspath(path)
    if storage.is_url(path) or storage.is_url(root_real):
        return storage.is_url(path) and path.startswith(root_real.rstrip("/") + "/") and ".." not in path.split("/")
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _refusal(item: WorkItem, out: str, out_real: str, sources: dict[str, str]) -> str | None:
    if not inside(out, out_real):
        return f"{item.input}: its output {out} resolves outside the output folder ({resolved(out)})"
    real = resolved(out)
    rel = real[len(out_real):].lstrip("/").split("/")
    if rel[0] in RESERVED:
        return f"{item.input}: its output {out} would take the name of the run's own {rel[0]}"
    if real == resolved(item.input):
        return f"{item.input}: its output is the input itself"
    if real in sources:  # --output above --input, and a subfolder of the same name: in/in/a.png -> in/a.png
        return f"{item.input}: its output {out} is {sources[real]} of this run; choose an --output outside the inputs"
    if not storage.is_url(real) and os.path.isdir(real):
        return f"{item.input}: its output {out} is a folder"
    ext = posixpath.splitext(out)[1].lower()
    if ext not in EXTENSIONS:  # (found after its fit, before)
        return f"{item.input}: cannot write its output {out}: '{ext or 'no extension'}' is not one of " \
               f"{', '.join(e[1:] for e in EXTENSIONS)}"
    if item.gt and not storage.is_url(item.gt) and not os.path.isfile(item.gt):
        return f"{item.input}: its ground truth {item.gt} is not there"
    return None


def check_output_dir(out_dir: str) -> None:
    """A local --output that is a file, or whose report.csv is a folder, is refused in one line (they
    were Python's 'File exists' or 'Is a directory', after the scan)."""
    if storage.is_url(out_dir):
        return
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PlanError(f"{out_dir}: --output is a file, not a folder")
    report = os.path.join(out_dir, "report.csv")
    if os.path.isdir(report):
        raise PlanError(f"{report} is a folder: the run writes its report there; move it away")


def plan_outputs(items: Iterable[WorkItem], output_dir: str | os.PathLike) -> Plan:
    """Check and settle every item's output (see the module's docstring); raises PlanError when
    two items would write one output, or one item is listed twice."""
    out_dir = absolute(os.fspath(output_dir))
    check_output_dir(out_dir)
    out_real = resolved(out_dir)
    pictures = Path(out_dir) / REPORT_PICTURES
    if not storage.is_url(out_dir) and pictures.is_symlink():
        raise PlanError(f"{pictures} is a symlink (to {os.readlink(pictures)}): the run writes its report pictures "
                        "there and nowhere outside --output; remove it")
    items = list(items)
    sources = {resolved(p): f"the {what} {p}" for i in items if not i.error
               for what, p in (("input", i.input), ("ground truth", i.gt)) if p}
    planned: list[WorkItem] = []
    by_output: dict[str, WorkItem] = {}
    by_key: dict[str, WorkItem] = {}
    for item in items:
        if item.error:
            planned.append(dataclasses.replace(item, key=item_key(item)))
            continue
        out = absolute(item.output)
        refused = _refusal(item, out, out_real, sources)
        if refused:
            planned.append(dataclasses.replace(item, output=out, error=refused, key=item_key(item)))
            continue
        real = resolved(out)
        if real in by_output:
            other = by_output[real]
            raise PlanError(f"{other.input} and {absolute(item.input)} would both write {out}; give them apart "
                            "(--keep-ext keeps the input's extension in the name, or a manifest's output column)")
        key = item_key(item)
        if key in by_key:
            raise PlanError(f"{item.input} is listed twice with the same settings (outputs {by_key[key].output} "
                            f"and {out}); list it once, or give each its own settings")
        settled = dataclasses.replace(item, input=absolute(item.input), output=out, key=key,
                                      gt=absolute(item.gt) if item.gt else None)
        by_output[real] = by_key[key] = settled
        planned.append(settled)
    for real, item in by_output.items():  # a.png as a file and as the folder of a.png/c.png
        parent = posixpath.dirname(real)
        while len(parent) > len(out_real):
            if parent in by_output:
                raise PlanError(f"{by_output[parent].input} would write the file {parent}, which "
                                f"{item.input} needs as a folder for {real}; give them apart (--suffix, --keep-ext)")
            parent = posixpath.dirname(parent)
    return Plan(planned, out_real)
