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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

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
    output_dir: Path  # resolved


def item_key(item: WorkItem) -> str:
    """What names one piece of work in report.csv across runs: the resolved input and its own
    settings (preset and manifest overrides). ``dir`` and ``/abs/dir`` give the same key; one
    input at two scales gives two."""
    settings = json.dumps([item.preset, [list(kv) for kv in item.overrides]], default=str)
    return f"{os.path.realpath(item.input)} {settings}" if item.overrides or item.preset else \
        os.path.realpath(item.input)


def file_stamp(path: str | os.PathLike) -> str:
    """'size:mtime_ns:ctime_ns' of a file: what resume compares first, before hashing (50,000 inputs
    stat in a second; hashing them all would take minutes). The change time is there because a
    rewrite of the same size whose mtime was put back (``touch -r``) keeps the other two; no one
    can put a ctime back."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def unchanged(path: str | os.PathLike, stamp: str | None, sha256: str | None) -> bool:
    """Whether the file at ``path`` still holds what a row recorded of it: the same stamp, or, when
    the stamp moved (a copy, a touch), the same content."""
    if not stamp or not sha256:
        return False
    try:
        if file_stamp(path) == stamp:
            return True
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest() == sha256
    except OSError:
        return False


def inside(path: str | os.PathLike, root_real: str) -> bool:
    """Whether ``path`` resolves (symlinks and ``..`` followed, as far as they exist) inside
    ``root_real``, itself resolved."""
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _refusal(item: WorkItem, out: Path, out_real: str, sources: dict[str, str]) -> str | None:
    if not inside(out, out_real):
        return f"{item.input}: its output {out} resolves outside the output folder ({os.path.realpath(out)})"
    real = os.path.realpath(out)
    rel = Path(os.path.relpath(real, out_real))
    if rel.parts and rel.parts[0] in RESERVED:
        return f"{item.input}: its output {out} would take the name of the run's own {rel.parts[0]}"
    if real == os.path.realpath(item.input):
        return f"{item.input}: its output is the input itself"
    if real in sources:  # --output above --input, and a subfolder of the same name: in/in/a.png -> in/a.png
        return f"{item.input}: its output {out} is {sources[real]} of this run; choose an --output outside the inputs"
    if os.path.isdir(real):
        return f"{item.input}: its output {out} is a folder"
    return None


def plan_outputs(items: Iterable[WorkItem], output_dir: Path) -> Plan:
    """Check and settle every item's output (see the module's docstring); raises PlanError when
    two items would write one output, or one item is listed twice."""
    out_dir = Path(os.path.abspath(output_dir))
    out_real = os.path.realpath(out_dir)
    pictures = out_dir / REPORT_PICTURES
    if pictures.is_symlink():
        raise PlanError(f"{pictures} is a symlink (to {os.readlink(pictures)}): the run writes its report pictures "
                        "there and nowhere outside --output; remove it")
    items = list(items)
    sources = {os.path.realpath(p): f"the {what} {p}" for i in items if not i.error
               for what, p in (("input", i.input), ("ground truth", i.gt)) if p}
    planned: list[WorkItem] = []
    by_output: dict[str, WorkItem] = {}
    by_key: dict[str, WorkItem] = {}
    for item in items:
        if item.error:
            planned.append(dataclasses.replace(item, key=item_key(item)))
            continue
        out = Path(os.path.abspath(item.output))
        refused = _refusal(item, out, out_real, sources)
        if refused:
            planned.append(dataclasses.replace(item, output=str(out), error=refused, key=item_key(item)))
            continue
        real = os.path.realpath(out)
        if real in by_output:
            other = by_output[real]
            raise PlanError(f"{other.input} and {os.path.abspath(item.input)} would both write {out}; give them apart "
                            "(--keep-ext keeps the input's extension in the name, or a manifest's output column)")
        key = item_key(item)
        if key in by_key:
            raise PlanError(f"{item.input} is listed twice with the same settings (outputs {by_key[key].output} "
                            f"and {out}); list it once, or give each its own settings")
        settled = dataclasses.replace(item, input=os.path.abspath(item.input), output=str(out), key=key,
                                      gt=os.path.abspath(item.gt) if item.gt else None)
        by_output[real] = by_key[key] = settled
        planned.append(settled)
    for real, item in by_output.items():  # a.png as a file and as the folder of a.png/c.png
        parent = os.path.dirname(real)
        while len(parent) > len(out_real):
            if parent in by_output:
                raise PlanError(f"{by_output[parent].input} would write the file {parent}, which "
                                f"{item.input} needs as a folder for {real}; give them apart (--suffix, --keep-ext)")
            parent = os.path.dirname(parent)
    return Plan(planned, Path(out_real))
