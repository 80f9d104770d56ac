"""The run's report: ``report.csv`` row by row as images finish, then ``summary.csv`` and a table.

``report.csv`` is append-only while a run goes: each row is written whole,
flushed and fsynced, so a crash loses at most the row being written. On the
next start it is compacted (last row per input wins, a torn last line
dropped) and rewritten atomically, so it always holds one row per input.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..files import storage
from ..files.images import write_atomic
from ..files.plan import inside, output_changed, resolved
from ..files.sources import leaves_folder
from .row import COLUMNS, SCORES, SUMMARY_MEANS, TABLE_MEANS, WORK, Y_SCORES

# report.csv is UTF-8; a file name that is not (Linux allows any bytes) is kept in it as the bytes it
# was, through Python's surrogate escapes, so that resume finds it again.
ENCODING, ERRORS = "utf-8", "surrogateescape"
# Rows end in CR LF (RFC 4180): the csv module quotes a field only for the characters of its line
# terminator, so with LF alone a name holding a CR was written bare and read back as two rows.
EOL = "\r\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v) if math.isinf(v) else f"{v:.6g}"
    return str(v)


def _output_rel(output: str | None, home: str) -> str:
    """A row's ``output_rel``: the path of its local output inside ``home`` (the folder of report.csv,
    absolute), or '' where it lies elsewhere (an object store's: a URL run's report is on this machine).
    Resolved where the path does not lie under ``home`` as written: a row of a run that named the
    folder another way (through a symlink)."""
    if not output or storage.is_url(output):
        return ""
    for path, root in ((os.path.abspath(output), home), (os.path.realpath(output), os.path.realpath(home))):
        root = root.rstrip(os.sep) + os.sep
        if path.startswith(root):
            return path[len(root):]
    return ""


def _placed(row: dict[str, str], home: str) -> dict[str, str]:
    """``row`` naming its output where the folder of report.csv (``home``) is now: where it was, unless
    the folder was moved whole (``mv`` keeps the outputs' stamps, so their rows still hold and resume
    keeps them) or is named another way (the symlink it was given through is gone)."""
    row["output"] = _at_home(row.get("output"), row.get("output_rel"), home)
    return row


def _at_home(output: Any, rel: Any, home: str) -> Any:
    """A row's output where the folder of report.csv (``home``, absolute) is now: its ``output_rel``
    there. An ``output_rel`` that leaves the folder, which no run writes (a hand edit: absolute, a
    ``..`` part, as a manifest's ``output`` is refused, or through a symlink that leads out), is
    not followed: the row keeps its ``output`` as written, as a report made before the column."""
    if not isinstance(rel, str) or not rel or "\0" in rel or leaves_folder(rel):
        return output
    path = os.path.join(home, rel)
    return path if inside(path, os.path.realpath(home)) else output


def _cells(row: Mapping[str, Any], home: str) -> dict[str, str]:
    """A row's cells, its ``output_rel`` made from its output."""
    return {**{k: _cell(row.get(k)) for k in COLUMNS}, "output_rel": _output_rel(row.get("output"), home)}


def row_key(row: Mapping[str, str]) -> str:
    """A row's key: its ``key`` column, or for a row of a report made before there was one, its
    resolved input (which is what the key of an item with no settings of its own is)."""
    return row.get("key") or os.path.realpath(row.get("input") or "")


def _complete_rows(path: Path) -> list[dict[str, str]]:
    """report.csv's whole rows in file order (a row cut short by a crash is left out), each naming
    its output where the folder now is (``_placed``).

    Read back with the surrogates a file name that is not UTF-8 was written with, so that every
    name a file system allows round-trips."""
    if not path.exists():
        return []
    with open(path, newline="", encoding=ENCODING, errors=ERRORS) as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # torn last line
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out, home = [], os.path.abspath(path.parent)
    for row in reader:
        complete = None not in row and None not in row.values()  # not cut short, nor with cells to spare
        if row.get("input") and complete and len(row) == len(reader.fieldnames or []):
            out.append(_placed(row, home))
    return out


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    """key -> its last complete row."""
    return {row_key(row): row for row in _complete_rows(path)}


def current(rows: list[Mapping[str, str]]) -> list[int]:
    """The indices of the rows still current, in file order: each key's last row, less an ok row
    whose output a later ok row (of another key: a manifest row with settings of its own) names."""
    last: dict[str, int] = {}
    for n, row in enumerate(rows):
        last[row_key(row)] = n
    keep, outputs = [], set()
    for n in sorted(last.values(), reverse=True):
        row = rows[n]
        if row.get("status") == "ok" and row.get("output"):
            out = resolved(row["output"])
            if out in outputs:
                continue
            outputs.add(out)
        keep.append(n)
    return keep[::-1]


def output_holds(row: Mapping[str, str]) -> bool:
    """Whether the file a row's output names is still the one it wrote, as resume decides it for
    an image it would fit (``files.plan.output_changed``: a chmod or a hard link leaves it the
    one; a write, a file renamed over it or a copy does not). A row made before stamps were kept
    is taken at its word."""
    stamp = row.get("output_stat")
    if not stamp:
        return True
    try:
        return output_changed(row.get("output") or "", stamp) is None
    except OSError:
        return False


DISK_FULL = "disk full"  # how a failed row names a full disk (the driver stops the run on it)


class DiskFull(OSError):
    """report.csv could not take a row: the disk (or the quota) is full. The file is left as it was
    before the row, never with half of one."""


def write_rows(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """A whole report.csv of ``rows``, written atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator=EOL)
    w.writeheader()
    home = os.path.abspath(path.parent)
    for row in rows:
        w.writerow(_cells(row, home))
    try:
        write_atomic(path, buf.getvalue().encode(ENCODING, ERRORS))
    except OSError as e:
        raise _full(e, path) from None


class ReportWriter:
    """Appends one row per finished image to ``report.csv``; safe to use from two threads (the
    run's, and the watch that ends a run whose Ray head is gone: ``hold``)."""

    def __init__(self, path: Path, keep: Iterable[Mapping[str, str]] = ()) -> None:
        self.path = path
        self.home = os.path.abspath(path.parent)  # the rows' output_rel are inside it
        write_rows(path, keep)  # compacted copy of what is kept
        self.f = open(path, "ab")
        self.lock = threading.Lock()  # one row at a time; held for good by ``hold``

    def write(self, record: Mapping[str, Any]) -> None:
        buf = io.StringIO(newline="")
        csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator=EOL).writerow(_cells(record, self.home))
        data = buf.getvalue().encode(ENCODING, ERRORS)
        with self.lock:
            end = self.f.tell()
            try:
                self.f.write(data)  # one write per row: a crash cannot interleave two rows
                self.f.flush()
                os.fsync(self.f.fileno())
            except OSError as e:
                self._cut(end)
                raise _full(e, self.path) from None

    def hold(self) -> None:
        """Take the writer for good, after the row being written (if any) is whole: a process about
        to end writes no more rows (a caller of ``write`` or ``close`` waits until it ends)."""
        self.lock.acquire()

    def _cut(self, end: int) -> None:
        """Drop what a failed write left of a row (the buffer too: closing would write it again)."""
        try:
            self.f.close()
        except OSError:
            pass
        os.truncate(self.path, end)
        self.f = open(self.path, "ab")

    def close(self) -> None:
        with self.lock:
            self.f.close()


def _full(e: OSError, path: Path) -> OSError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(e.errno, f"{path}: disk full ({e.strerror}); the report keeps every row written before")
    return e


def compact(path: Path, provisional: Iterable[str] = ()) -> None:
    """Rewrite report.csv (atomically) with its current rows (``current``): a run that redid an
    image appended its new row after the old one, which it kept until then (``run.resume.kept_rows``).
    The ``provisional`` keys' rows are dropped where their output is no longer what they wrote: a
    stopped run's last fits write their outputs, and no row."""
    if not path.exists():
        return
    rows, provisional = _complete_rows(path), set(provisional)
    write_rows(path, [rows[n] for n in current(rows) if row_key(rows[n]) not in provisional or output_holds(rows[n])])


def read_report(report_csv: Path, numbers: Iterable[str] = ()):
    """report.csv as a pandas DataFrame of its current rows (``current``: a report read while a run
    appends may hold an image's old row and its new one), outputs where the folder now is
    (``_placed``): names as text whatever they
    look like ('NA.png', '1e5', bytes that are not UTF-8), only an empty cell missing, and
    ``numbers`` as numbers (NaN where a cell is not one)."""
    import pandas as pd

    df = pd.read_csv(report_csv, dtype={c: str for c in ("input", "output", "gt", "rel", "error", "node", "scale",
                                                          "key", "output_rel")},
                     encoding=ENCODING, encoding_errors=ERRORS, keep_default_na=False, na_values=[""])
    if "output_rel" in df:  # (a report made before the column has none)
        home = os.path.abspath(report_csv.parent)
        df["output"] = [_at_home(out, rel, home) for rel, out in zip(df["output_rel"], df["output"])]
    if not df.empty:
        cells = [c for c in ("key", "input", "output", "status") if c in df]
        df = df.iloc[current(df[cells].fillna("").astype(str).to_dict("records"))].reset_index(drop=True)
    for c in numbers:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def summarize(report_csv: Path):
    """Means per input folder and overall: a pandas DataFrame (folder 'ALL' last)."""
    import pandas as pd

    df = read_report(report_csv, SCORES + WORK)
    if df.empty:
        return pd.DataFrame(columns=["folder", "images", "ok", "failed"])
    # a row refused before any work may have no rel: it counts where its input's name would
    rel = df["rel"].fillna("").astype(str).where(df["rel"].fillna("").astype(str) != "",
                                                  df["input"].astype(str).map(lambda p: Path(p).name))
    df["folder"] = rel.map(lambda r: str(Path(r).parent) if str(Path(r).parent) != "." else "(top)")
    df["ok"] = df["status"].eq("ok")
    for k in Y_SCORES:
        df["gain_" + k] = df[k] - df["bicubic_" + k]

    def agg(g) -> dict[str, Any]:
        ok = g[g["ok"]]
        out: dict[str, Any] = {"images": len(g), "ok": int(g["ok"].sum()), "failed": int((~g["ok"]).sum())}
        for c in SUMMARY_MEANS:
            out[c] = ok[c].mean() if ok[c].notna().any() else float("nan")
        return out

    groups = list(df.groupby("folder", sort=True))
    rows = [{"folder": name, **agg(g)} for name, g in groups] if len(groups) > 1 else []  # (one folder: ALL says it)
    rows.append({"folder": "ALL", **agg(df)})
    return pd.DataFrame(rows)


def write_summary(out_dir: Path) -> str:
    """Write ``summary.csv`` from ``report.csv``; returns the printable table."""
    table = summarize(out_dir / "report.csv")
    write_atomic(out_dir / "summary.csv", table.to_csv(index=False, float_format="%.6g").encode(ENCODING, ERRORS))
    return format_table(table)


def _format(column: str) -> str:
    """The printed table's format for a column: dB to 0.01 (a gain signed), SSIM to 0.0001, seconds to 0.1."""
    if "psnr" in column:
        return "{:+.2f}" if column.startswith("gain_") else "{:.2f}"
    return "{:.4f}" if "ssim" in column else "{:.1f}"


def format_table(table) -> str:
    if table.empty:
        return "no images"
    cols = ["folder", "images", "ok", "failed", *TABLE_MEANS]
    fmt = {c: _format(c) for c in TABLE_MEANS}
    show = table[cols].copy()
    for c, f in fmt.items():
        show[c] = show[c].map(lambda v, f=f: "-" if v != v else f.format(v))
    return show.to_string(index=False)
