"""Resume: which rows of an earlier run into the same folder a run keeps, and so which images it
skips. No Ray here: ``--dry-run`` asks the same question without starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import FitConfig
from ..files.plan import file_stamp, resolved, unchanged
from ..files.sources import WorkItem
from ..report.table import output_holds, read_rows


def redo_reason(row: dict[str, str] | None, item: WorkItem, cfg_hash: str, precision: str) -> str | None:
    """None when ``row`` is still the result of ``item``: made ok with the same settings (bf16 packs
    are not what an fp32 run asks for), into the same output (which still holds what that row
    wrote), against the same ground truth (or none), from an input and a ground truth whose contents
    have not changed since; else why the item is fitted again. Paths compare resolved: an --output
    or --gt given through a symlink is the same run."""
    if not row:
        return "not done before"
    if row.get("status") != "ok":
        return "it failed before"
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
        output_now = file_stamp(item.output)
    except OSError:
        return "its output is gone"
    if row.get("output_stat") and output_now != row["output_stat"]:
        return "its output was written over since"  # by another run, or by hand: it is another image
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


def kept_rows(items: list[WorkItem], config_for: Callable[[WorkItem], FitConfig], report_path: Path,
              overwrite: bool, precision: str = "bf16", old: dict[str, dict[str, str]] | None = None) -> Resumed:
    """The old rows this run keeps, by key, and which of its items are done.

    Kept: the rows of its items still done; the ok rows of other images (earlier runs into the same
    folder) while their outputs are still what they wrote; and, until the new result replaces them,
    the rows of its items done with other settings and the rows of other keys whose outputs it
    writes (a manifest row with settings of its own), while they still describe the output on disk
    (a rerun stopped early must not take a night's rows with it). Those are provisional: at the
    run's end, one whose output a stopped fit wrote over goes. Dropped: rows whose output is gone
    or was written over, whose input or ground truth changed (their scores are stale), and old failed
    rows of items this run does not hold (of a manifest line since fixed, or of other settings)."""
    if old is None:  # (the dry run has read them already)
        old = {} if overwrite else read_rows(report_path)
    ours = {resolved(i.output) for i in items if i.output}
    mine = {i.key for i in items}
    keep: dict[str, dict[str, str]] = {}
    provisional: set[str] = set()
    for k, r in old.items():
        if k not in mine and r.get("status") == "ok" and output_holds(r):
            keep[k] = r
            if resolved(r.get("output") or "") in ours:
                provisional.add(k)
    done: set[str] = set()
    by_output = _by_output(old, mine)
    for item in items:
        try:
            h = None if item.error else config_for(item).hash()
        except ValueError:
            h = None
        row = old.get(item.key)
        if h is not None and not is_done(row, item, h, precision):
            # The same work under another key: a manifest column that repeats what the run asks of
            # every image (``scale: 2`` in a x2 run), or a folder run's row of a manifest's image, is
            # the same settings hash, input and output. Its row is this item's, not a reason to redo it.
            other = next((k for k in by_output.get(resolved(item.output or ""), ())
                          if k in keep and is_done(old[k], item, h, precision)), None)
            if other is not None:
                row = dict(keep.pop(other), key=item.key)
                provisional.discard(other)
        if h is not None and is_done(row, item, h, precision):
            keep[item.key] = _restamped(row, item)
            done.add(item.key)
        elif row and row.get("status") == "ok" and is_done(row, item, row.get("config_hash", ""), "bf16"):
            keep[item.key] = row  # true of its output under its own settings, until replaced
            provisional.add(item.key)
    return Resumed(keep, done, provisional)


def _by_output(rows: dict[str, dict[str, str]], mine: set[str]) -> dict[str, list[str]]:
    """resolved output -> the keys of the ok rows (of keys other than this run's items) that wrote it."""
    out: dict[str, list[str]] = {}
    for k, r in rows.items():
        if k not in mine and r.get("status") == "ok" and r.get("output"):
            out.setdefault(resolved(r["output"]), []).append(k)
    return out


def earlier_row(item: WorkItem, rows: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """The row an item's "to do" is explained by: its own key's, else the last ok row that wrote its
    output under another key (done with other settings: a manifest's own column, a folder run's)."""
    if item.key in rows:
        return rows[item.key]
    out = resolved(item.output or "")
    return next((r for r in reversed(rows.values()) if r.get("status") == "ok" and r.get("output")
                 and resolved(r["output"]) == out), None)


def _restamped(row: dict[str, str], item: WorkItem) -> dict[str, str]:
    """A kept row with its files' stamps as they are now (proven the same content), so that a
    copied or touched dataset is hashed once, not at every rerun."""
    row = dict(row, input_stat=file_stamp(item.input))
    if item.gt:
        row["gt_stat"] = file_stamp(item.gt)
    return row
