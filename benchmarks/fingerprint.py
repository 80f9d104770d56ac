"""A fixed small run's fingerprint: what a behaviour-preserving change must leave the same.

Runs, through the command line only (so any version of the package can be fingerprinted):
the generated samples upscaled x2 with ``--degrade`` in packs and with ``--pack 1``, a
manifest with a per-row override and a bad row, and ``fit`` on one image with its curve and
weights. It prints one JSON object: the SHA-256 of every file each run wrote (bar run.json
and report.html, which hold times and versions) and the report rows without the columns
that hold times or the machine. Two fingerprints are compared with ``--compare A B``.

    python benchmarks/fingerprint.py > before.json      # on the old tree
    python benchmarks/fingerprint.py > after.json       # on the new one
    python benchmarks/fingerprint.py --compare before.json after.json

CPU only (``--gpus 0``, ``--device cpu``), where torch's results repeat bit for bit.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Columns that hold times or say where a row ran: they differ between any two runs.
VOLATILE = {"fit_seconds", "infer_seconds", "started_at", "finished_at", "node", "host", "gpu", "pid"}
SMALL = ["--max-iters", "40", "--crop", "24", "--width", "16", "--gpus", "0", "--no-progress",
         "--back-projection-iters", "2"]


def _zssr(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "zssr_batch", *args], cwd=cwd, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _summary_rows(text: str) -> list[dict[str, str]]:
    volatile = {"fit_seconds", "infer_seconds"}
    return [{k: v for k, v in r.items() if k not in volatile} for r in csv.DictReader(io.StringIO(text))]


def _safetensors_digest(path: Path) -> str:
    """A weights file by its tensors and metadata: safetensors writes its metadata keys in a
    different order in every process, so the bytes of two equal files differ."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for k in sorted(f.keys()):
            h.update(k.encode() + f.get_tensor(k).numpy().tobytes())
    return h.hexdigest()


def fingerprint_folder(out: Path, root: Path) -> dict:
    files, rows, summary = {}, [], []
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name in ("run.json", "report.html"):
            continue
        rel = p.relative_to(out).as_posix()
        text = p.read_bytes()
        if p.name == "report.csv":
            for r in csv.DictReader(io.StringIO(text.decode())):
                rows.append({k: v.replace(str(root), "ROOT") for k, v in r.items() if k not in VOLATILE})
            continue
        if p.name == "summary.csv":
            summary = _summary_rows(text.decode())
            continue
        files[rel] = _safetensors_digest(p) if p.suffix == ".safetensors" else hashlib.sha256(text).hexdigest()
    rows.sort(key=lambda r: (r.get("input", ""), r.get("scale", "")))
    return {"files": files, "rows": rows, "summary": summary}


def make() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _zssr("samples", "samples", "--size", "64", cwd=root)
        _zssr("run", "--input", "samples", "--degrade", "--scale", "2", "--output", "packed", *SMALL, cwd=root)
        _zssr("run", "--input", "samples", "--degrade", "--scale", "2", "--output", "alone", "--pack", "1",
              *SMALL, cwd=root)
        (root / "m.csv").write_text("input,scale,max_iters\nsamples/rings.png,3,20\nsamples/text.png,,\n"
                                    "samples/missing.png,,\n")
        _zssr("run", "--input", "m.csv", "--output", "manifest", *SMALL, cwd=root)
        _zssr("fit", "samples/bricks.png", "-o", "fit/bricks_x2.png", "--device", "cpu", "--max-iters", "40",
              "--crop", "24", "--width", "16", "--save-curve", "--save-weights", cwd=root)
        return {name: fingerprint_folder(root / name, root) for name in ("packed", "alone", "manifest", "fit")}


def _without(fp: dict, columns: set[str]) -> dict:
    return {**fp, "rows": [{k: v for k, v in r.items() if k not in columns} for r in fp.get("rows", [])]}


def compare(a: dict, b: dict, ignore: set[str] = frozenset()) -> list[str]:
    diffs = []
    for run in sorted(set(a) | set(b)):
        fa, fb = _without(a.get(run, {}), ignore), _without(b.get(run, {}), ignore)
        for key in ("files", "rows", "summary"):
            if fa.get(key) != fb.get(key):
                diffs.append(f"{run}: {key} differ:\n  before {json.dumps(fa.get(key))}\n  after  {json.dumps(fb.get(key))}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", nargs=2, metavar="JSON", help="compare two fingerprints instead of making one")
    p.add_argument("--ignore", action="append", default=[], metavar="COLUMN",
                   help="a report column to leave out of the comparison (one a change adds on purpose)")
    args = p.parse_args(argv)
    if args.compare:
        a, b = (json.loads(Path(f).read_text()) for f in args.compare)
        diffs = compare(a, b, set(args.ignore))
        for d in diffs:
            print(d)
        n = sum(len(v["files"]) for v in a.values())
        r = sum(len(v["rows"]) for v in a.values())
        print("identical" if not diffs else f"{len(diffs)} differences",
              f"({n} files, {r} report rows compared)")
        return 1 if diffs else 0
    print(json.dumps(make(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
