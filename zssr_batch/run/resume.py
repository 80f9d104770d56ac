"""Resume: which rows of an earlier run into the same folder a run keeps, and so which images it
skips. No Ray here: ``--dry-run`` asks the same question without starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import FitConfig
from ..files.plan import file_stamp, output_changed, resolved, unchanged
from ..files.sources import WorkItem
from ..report.table import output_holds, read_rows


def redo_reason(row: dict[str, str] | None, item: WorkItem, cfg_hash: str, precision: str) -> str | None:
    """None when ``row`` is still the result of ``item``: made ok with the same settings (bf16 packs
    are not what an fp32 run asks for), into the same output (which still holds what that row
    wrote), against the same ground truth (or none), from an input and a ground truth whose contents
    have not changed since; else why the item is fitted again. Paths compare resolved: an --output
    or --gt given through a symlink is the same run. A row names its output where its folder is now
    (``report.table``): a folder moved whole resumes there."""
    if not row:
        return "not done before"
    if row.get("status") != "ok":
        return "it failed before"
    if row.get("input") and not _same_path(row["input"], item.input):  # a row of another key, at its output
        return f"its output holds the result of {row['input']}"
    if row.get("config_hash") != cfg_hash:
        return "other settings"
    if precision == "fp32" and "bf16" in (row.get("pack_way") or ""):
        return "fp32 asked, done in bf16"
    if not _same_path(row.get("output"), item.output):
        return f"it was written to {row.get('output')}"
    if not _same_path(row.get("gt"), item.gt):
        return "other ground truth" if item.gt and row.get("gt") else \
            "now scored against ground truth" if item.gt else "no ground truth now"
    try:
        changed = output_changed(item.output, row.get("output_stat"))  # (a chmod or a hard link: not changed)
    except OSError:
        return "its output is gone"
    if changed:  # another run's, one edited by hand, or a copy (no row keeps a hash to prove it the same)
        return f"its output is not the file its row wrote: {changed}"
    if not unchanged(item.input, row.get("input_stat"), row.get("input_sha256")):
        return "the input changed"
    if item.gt and not unchanged(item.gt, row.get("gt_stat"), row.get("gt_sha256")):
        return "the ground truth changed"
    return None


def is_done(row: dict[str, str] | None, item: WorkItem, cfg_hash: str, precision: str) -> bool:
    return redo_reason(row, item, cfg_hash, precision) is None


def _same_path(a: str | None, b: str | None) -> bool:
    return (not a and not b) or bool(a and b and resolved(a) == resolved(b))


@dataclass(frozen=True)
class Resumed:
    rows: dict[str, dict[str, str]]  # by key: the rows the report starts with
    done: set[str]  # the keys of this run's items it skips (their rows are among ``rows``)
    provisional: set[str]  # keys of rows kept only until this run replaces them (``report.table.compact``)
    by_output: dict[str, list[str]]  # the old rows by output (``rows_by_output``): the dry run's reasons use it too


def kept_rows(items: list[WorkItem], config_for: Callable[[WorkItem], FitConfig], report_path: Path,
              overwrite: bool, precision: str = "bf16", old: dict[str, dict[str, str]] | None = None) -> Resumed:
    """The old rows this run keeps, by key, and which of its items are done (none with ``overwrite``).

    Kept: the rows of its items still done, under its own key or, the same work, under another
    (``_moved``); the ok rows of other images (earlier runs into the same folder) while their outputs
    are still what they wrote; and, until the new result replaces them, the rows of its items done
    with other settings and the rows of other keys whose outputs it writes (a manifest row with
    settings of its own), while they still describe the output on disk (a rerun stopped early must
    not take a night's rows with it). Those are provisional: at the run's end, one whose output a
    stopped fit wrote over goes. An item's old row of another output (a manifest that points the
    image elsewhere) stays as that output's row while the file is what it wrote (``_set_aside``).
    Dropped: rows whose output is gone or was written over, whose input or ground truth changed
    (their scores are stale), and old failed rows of items this run does not hold (of a manifest
    line since fixed, or of other settings)."""
    if old is None:  # (the dry run has read them already)
        old = read_rows(report_path)
    ours = {resolved(i.output) for i in items if i.output}
    mine = {i.key for i in items}
    keep: dict[str, dict[str, str]] = {}
    provisional: set[str] = set()
    for k, r in old.items():
        if k not in mine and r.get("status") == "ok" and output_holds(r):
            keep[k] = r
            if resolved(r.get("output") or "") in ours:
                provisional.add(k)
    hashes = {item.key: _hash(item, config_for) for item in items}
    done: set[str] = set()
    if not overwrite:
        for item in items:
            h = hashes[item.key]
            if h is not None and is_done(old.get(item.key), item, h, precision):
                keep[item.key] = _restamped(old[item.key], item)
                done.add(item.key)
    own = set(done)
    by_output = rows_by_output(old)
    taken = _moved(items, hashes, old, by_output, precision, keep, provisional, done, own) if not overwrite else set()
    for item in items:
        row = old.get(item.key)
        if item.key in taken or item.key in own:
            continue  # its row is another item's now, or its own still
        if item.key in done:  # done by another key's row: its own old row, if of another output, stays
            _set_aside(item, row, keep, provisional, ours)
        elif row and row.get("status") == "ok":
            if is_done(row, item, row.get("config_hash", ""), "bf16"):
                keep[item.key] = row  # true of its output under its own settings, until replaced
                provisional.add(item.key)
            else:
                _set_aside(item, row, keep, provisional, ours)
    return Resumed(keep, done, provisional, by_output)


def _hash(item: WorkItem, config_for: Callable[[WorkItem], FitConfig]) -> str | None:
    try:
        return None if item.error else config_for(item).hash()
    except ValueError:
        return None


def _moved(items: list[WorkItem], hashes: dict[str, str | None], old: dict[str, dict[str, str]],
           by_output: dict[str, list[str]], precision: str, keep: dict[str, dict[str, str]], provisional: set[str], done: set[str], own: set[str]) -> set[str]:
    """Mark done the items whose work an old row of another key holds, moving that row to the item's
    key; returns the keys whose rows were moved. The same settings hash, the same input (its path,
    not a copy of it) and output: a manifest column that repeats what the run asks of every image
    (``scale: 2`` in a x2 run), a manifest beside a folder run's images, or another line of the
    same manifest whose output this one now names. Not the row of an item done by its own row
    (``own``); an item done by another's row leaves its own to take."""
    taken: set[str] = set()
    for item in items:
        h = hashes[item.key]
        if item.key in done or h is None:
            continue
        for k in by_output.get(resolved(item.output or ""), ()):
            row = old[k]
            if k == item.key or k in own or k in taken:
                continue
            if is_done(row, item, h, precision):
                keep.pop(k, None)
                provisional.discard(k)
                keep[item.key] = _restamped(dict(row, key=item.key), item)
                done.add(item.key)
                taken.add(k)
                break
    return taken


def _set_aside(item: WorkItem, row: dict[str, str] | None, keep: dict[str, dict[str, str]], provisional: set[str],
               ours: set[str]) -> None:
    """Keep an item's old ok row of another output than the item's, under a key of its own (the
    item's and that output), while the file is what it wrote: a key holds one row, and the item's
    new row (or a moved one) takes its key, but the other output is still that image's result. A
    later run that asks for that output finds it there (``_moved``)."""
    if not row or row.get("status") != "ok" or not row.get("output") or _same_path(row["output"], item.output):
        return
    if not output_holds(row):
        return
    out = resolved(row["output"])
    aside = f"{item.key} -> {out}"
    keep[aside] = dict(row, key=aside)
    if out in ours:
        provisional.add(aside)


def rows_by_output(rows: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """resolved output -> the keys of the ok rows that wrote it."""
    out: dict[str, list[str]] = {}
    for k, r in rows.items():
        if r.get("status") == "ok" and r.get("output"):
            out.setdefault(resolved(r["output"]), []).append(k)
    return out


def earlier_row(item: WorkItem, rows: dict[str, dict[str, str]], by_output: dict[str, list[str]]) -> dict[str, str] | None:
    """The row an item's "to do" is explained by: its own key's where it failed or wrote the item's
    output, else the last ok row of another key that wrote the output (other settings, another
    input), else its own key's.
    ``by_output``: ``rows_by_output(rows)`` (``Resumed.by_output``), made once for all the items."""
    at_output = by_output.get(resolved(item.output or ""), [])
    own = rows.get(item.key)
    if own is not None and (item.key in at_output or not at_output or own.get("status") != "ok"):
        return own  # (a failed row: that it failed is the reason)
    return rows[at_output[-1]] if at_output else None


def _restamped(row: dict[str, str], item: WorkItem) -> dict[str, str]:
    """A kept row with its files' stamps as they are now (proven the same content), so that a
    copied or touched dataset is hashed once, not at every rerun; its output's too (proven the
    file it wrote), so that a stamp of an earlier version gains the inode."""
    row = dict(row, input_stat=file_stamp(item.input))
    if row.get("output_stat") and item.output:
        row["output_stat"] = file_stamp(item.output)
    if item.gt:
        row["gt_stat"] = file_stamp(item.gt)
    return row
