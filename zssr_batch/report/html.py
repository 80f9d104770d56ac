"""``report.html``: one page that opens from disk (no server, no network) to judge a run by eye.

At the top the run (from ``run.json``), the summary table (with units) and three charts (PSNR-Y
gain per image, ZSSR vs bicubic PSNR-Y, fit time per image), drawn as inline SVG; a chart's point
names its image on hover and, clicked, brings up that image's entry. Below, one entry per image,
sortable and filterable, drawn page by page from JSON embedded in the page, so that 10,000 images
open in seconds: thumbnails of input / bicubic / ZSSR / ground truth (each a link to its full
picture, with the crop's box drawn on it), the crop where ZSSR and bicubic differ most, the fit's
loss and learning-rate curve, and its numbers; failed images show their error. A viewer shows
bicubic, ZSSR and the ground truth at full resolution, side by side under a slider or in turn,
zoomed and panned together. The pictures are the files the workers made once (``.report/thumbs/``,
``.report/curves/``) and the outputs and ground truths themselves, all linked by paths relative to
the page (``../`` where they lie outside the output folder).
"""

from __future__ import annotations

import json
import math
import os
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ..files.images import write_atomic
from ..files.plan import REPORT_PICTURES, picture_name
from .plots import ranked, scatter
from .row import PAGE_NUMBERS, WORK, Y_FIRST
from .table import read_report, summarize
from .thumbs import browser_shows


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _text(v) -> str:
    return v if isinstance(v, str) else ""  # an empty cell reads as NaN, which would print as 'nan'


def _url(path: str) -> str:
    return quote(path, errors="surrogateescape")  # a name that is not UTF-8 still links to its file


def _pictures(r: dict, out_dir: Path, rel: str) -> tuple[Path | None, Path | None]:
    """(a row's thumbnail folder, its curve), relative to ``out_dir``; None where there is none.
    They are named after the row's output under .report/ (``files.plan.REPORT_PICTURES``);
    reports made before that named them after the input's rel, at the top of the folder."""
    output = r.get("output")
    found = []
    if isinstance(output, str) and output:
        name = picture_name(Path(os.path.relpath(os.path.abspath(output), os.path.abspath(out_dir))).as_posix())
        found.append((Path(REPORT_PICTURES) / "thumbs" / name, Path(REPORT_PICTURES) / "curves" / f"{name}.svg"))
    found.append((Path("thumbs") / rel, Path("curves") / f"{rel}.svg"))
    for thumbs, curve in found:
        try:
            has_thumbs, has_curve = (out_dir / thumbs).is_dir(), (out_dir / curve).is_file()
        except OSError:  # a name the file system cannot hold has no pictures: the page still builds
            continue
        if has_thumbs or has_curve:
            return (thumbs if has_thumbs else None), (curve if has_curve else None)
    return None, None


def _link(path, out_dir: Path) -> str:
    """The URL of a local picture relative to report.html ('' where a browser cannot show it from there)."""
    if not isinstance(path, str) or not browser_shows(path):
        return ""
    try:
        if not os.path.isfile(path):
            return ""
        return _url(Path(os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))).as_posix())
    except (OSError, ValueError):  # ValueError: on another Windows drive there is no relative path
        return ""


def _files(r: dict, out_dir: Path, thumbs: Path | None, made: set[str]) -> dict[str, str]:
    """The full-resolution pictures of an ok row: the ones made for the page (``full_<kind>.png``:
    the bicubic upscale, and any original a browser cannot show), else the output and ground truth
    themselves. The input is linked only when it is the file the run read: with --degrade the
    input made from the ground truth is in no file (its row's input is the ground truth)."""
    files = {}
    originals = {"input": r.get("input") if r.get("input") != r.get("gt") else None, "bicubic": None,
                 "zssr": r.get("output"), "gt": r.get("gt")}
    for kind, original in originals.items():
        if f"full_{kind}.png" in made:
            files[kind] = _url((thumbs / f"full_{kind}.png").as_posix())
        elif link := _link(original, out_dir):
            files[kind] = link
    return files


def page_rows(df: pd.DataFrame, out_dir: Path) -> list[dict]:
    rows = []
    for r in df.to_dict("records"):
        rel = r.get("rel") if isinstance(r.get("rel"), str) and r.get("rel") else Path(str(r["input"])).name
        row = {k: _clean(r.get(k)) for k in PAGE_NUMBERS}
        gain = None if row["psnr_y"] is None or row["bicubic_psnr_y"] is None else row["psnr_y"] - row["bicubic_psnr_y"]
        thumbs, curve = _pictures(r, out_dir, rel)
        try:
            made = set(os.listdir(out_dir / thumbs)) if thumbs else set()
        except OSError:
            made = set()
        ok = r.get("status") == "ok"
        crop = None
        if ok and "crop.json" in made:
            try:
                crop = json.loads((out_dir / thumbs / "crop.json").read_text())
            except (OSError, ValueError):  # a box half written by a killed worker: no box, the rest still shows
                crop = None
        row.update(rel=rel, status=str(r.get("status")), error=_text(r.get("error")),
                   gain=gain, node=_text(r.get("node")), scale=_text(r.get("scale")),
                   thumbs=_url(thumbs.as_posix()) if thumbs else "", curve=_url(curve.as_posix()) if curve else "",
                   files=_files(r, out_dir, thumbs, made) if ok else {}, crop=crop,
                   gt="gt.png" in made,  # (no ground truth: no picture of it to ask for)
                   kernel="kernel.png" in made, kernel_true="kernel_true.png" in made,
                   kernel_source=_text(r.get("kernel_source")))
        rows.append(row)
    return rows


def _run_table(info: dict) -> str:
    images = info.get("images", {})
    machine = info.get("machine", {})
    engine = info.get("engine", {})
    items = [("command", info.get("command", "")), ("preset", engine.get("preset", "")),
             ("config hash", engine.get("config_hash", "")), ("started", info.get("started_at", "")),
             ("finished", info.get("finished_at", "")), ("machine", f"{machine.get('host', '')} ({machine.get('platform', '')})"),
             ("GPUs", ", ".join(machine.get("gpus", [])) or "none (CPU)"),
             ("images", f"{images.get('ok', 0)} ok, {images.get('failed', 0)} failed, "
                        f"{images.get('skipped', 0)} already done, {images.get('total', 0)} in all"),
             ("versions", ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items()))]
    if info.get("stopped"):
        items.append(("stopped", info["stopped"]))
    return "<table class='run'>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                                          for k, v in items) + "</table>"


_SCORE_HEADS = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB (dB)", "ssim_rgb": "SSIM-RGB"}
_WORK_HEADS = {"iterations": "steps", "fit_seconds": "fit (s)", "infer_seconds": "inference (s)"}


def _cell(column: str, v) -> str:
    """A summary figure as the printed table writes it: dB to 0.01, SSIM to 0.0001, gains signed, seconds to 0.1."""
    if v is None or v != v:
        return "-"
    sign = "+" if column.startswith("gain_") else ""
    if "psnr" in column:
        return f"{v:{sign}.2f}"
    if "ssim" in column:
        return f"{v:{sign}.4f}"
    return f"{v:.0f}" if column == "iterations" else f"{v:.1f}"


def _summary_table(out_dir: Path) -> str:
    """summary.csv's figures under two rows of headers (a score, then ZSSR / bicubic / gain beneath it),
    each with its unit: seventeen columns that fit a 1400-pixel window."""
    table = summarize(out_dir / "report.csv")
    if table.empty:
        return "<p>no images</p>"
    groups = [(_SCORE_HEADS.get(k, k), [(c, sub) for c, sub in ((k, "ZSSR"), ("bicubic_" + k, "bicubic"),
                                                                   ("gain_" + k, "gain")) if c in table])
              for k in Y_FIRST]
    groups.append(("mean per image", [(c, _WORK_HEADS.get(c, c)) for c in WORK if c in table]))
    counts = ["images", "ok", "failed"]
    top = "".join(f'<th rowspan="2">{h}</th>' for h in ["folder", *counts]) + "".join(
        f'<th colspan="{len(cols)}" class="group">{escape(head)}</th>' for head, cols in groups if cols)
    sub = "".join(f'<th class="{"first" if j == 0 else ""}">{escape(s)}</th>'
                  for _, cols in groups for j, (_, s) in enumerate(cols))
    body = "".join(
        f'<tr><td class="folder">{escape(str(r["folder"]))}</td>' + "".join(f"<td>{int(r[c])}</td>" for c in counts)
        + "".join(f'<td class="{"first" if j == 0 else ""}">{_cell(c, r[c])}</td>'
                  for _, cols in groups for j, (c, _) in enumerate(cols)) + "</tr>"
        for r in table.to_dict("records"))
    return (f'<table class="summary"><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{body}</tbody></table>'
            '<p class="note">Scores are means over the images that succeeded and have a ground truth; '
            'gain is ZSSR minus bicubic.</p>')


def write_html_report(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    df = read_report(out_dir / "report.csv", PAGE_NUMBERS)
    info = {}
    if (out_dir / "run.json").is_file():
        info = json.loads((out_dir / "run.json").read_text())
    rows = page_rows(df, out_dir)
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]

    def pick(k: str) -> list:
        return [rows[i][k] for i in ok]

    charts = "".join([
        ranked(pick("gain"), w=360, h=200, xlabel="images, by gain, best first", ylabel="dB", ident="chart-gain",
               title="PSNR-Y gain over bicubic, per image", keys=ok),
        scatter(pick("bicubic_psnr_y"), pick("psnr_y"), w=300, h=200, xlabel="bicubic PSNR-Y (dB)",
                ylabel="ZSSR PSNR-Y (dB)", ident="chart-scatter", title="ZSSR vs bicubic", keys=ok),
        ranked(pick("fit_seconds"), w=360, h=200, xlabel="images, by fit time, longest first", ylabel="seconds",
               ident="chart-time", title="fit time per image", keys=ok),
    ])
    # '<' escaped so that no name can end the script element or open a comment in it
    data = json.dumps(rows, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts = {"TITLE": escape(str(out_dir.name)), "RUN": _run_table(info), "SUMMARY": _summary_table(out_dir),
             "CHARTS": charts, "DATA": data}
    # one pass, so that what one part holds is never taken for another's marker
    html = re.sub(r"<!--(TITLE|RUN|SUMMARY|CHARTS|DATA)-->", lambda m: parts[m[1]], _TEMPLATE)
    path = out_dir / "report.html"
    write_atomic(path, html.encode("utf-8", "replace"))  # a name that is not UTF-8 shows as '?'
    return path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zssr-batch report: <!--TITLE--></title>
<style>
body { font: 13px/1.4 sans-serif; margin: 16px; color: #222; }
body.viewing { overflow: hidden; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 18px 0 6px; }
table.run th { text-align: left; padding-right: 12px; color: #555; font-weight: normal; vertical-align: top; }
table.run td { overflow-wrap: anywhere; }
table.summary { border-collapse: collapse; }
table.summary td, table.summary th { padding: 2px 7px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
table.summary th { font-weight: 600; }
table.summary th.group { text-align: center; border-bottom: 1px solid #999; }
table.summary .first { border-left: 1px solid #ddd; }
table.summary td.folder { text-align: left; white-space: normal; overflow-wrap: anywhere; max-width: 260px; }
.note { color: #666; font-size: 11px; margin: 4px 0; }
#charts { display: flex; flex-wrap: wrap; gap: 12px; }
#charts svg { border: 1px solid #eee; }
#charts [data-i] { cursor: pointer; }
#charts [data-i]:hover { fill: #d62728; fill-opacity: 1; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 3px 7px; border-radius: 3px;
       font-size: 12px; white-space: pre; z-index: 20; }
#controls { margin: 8px 0; display: flex; gap: 12px; flex-wrap: wrap; align-items: center; }
.entry { border-top: 1px solid #ddd; padding: 8px 0; display: flex; gap: 12px; flex-wrap: wrap; }
.entry.failed { background: #fff4f4; }
.entry.hit { outline: 3px solid #ff7f0e; outline-offset: 2px; }
.entry .info { width: 300px; }
.entry .name { font-weight: bold; word-break: break-all; }
.entry .nums td { padding: 0 6px 0 0; }
.entry button.open { margin: 6px 0; }
.pics figure { display: inline-block; margin: 0 6px 0 0; text-align: center; font-size: 11px; color: #555; vertical-align: top; }
.pics .frame { position: relative; display: inline-block; vertical-align: top; }
.pics img { display: block; max-width: 192px; max-height: 192px; }
.pics img.lr { image-rendering: pixelated; }
.pics .box { position: absolute; outline: 1px solid #ff0; box-shadow: 0 0 0 1px #000; pointer-events: none; }
.pics img.crop { width: 192px; height: 192px; max-width: none; max-height: none; image-rendering: pixelated; cursor: zoom-in; }
.cropnote { font-size: 11px; color: #555; margin: 4px 0 2px; }
.pics img.kernel { width: 104px; height: 104px; max-width: none; image-rendering: pixelated; background: #000; }
.kernels figcaption { max-width: 200px; }
.error { color: #b00; }
.gain-pos { color: #070; } .gain-neg { color: #b00; }
#viewer { position: fixed; inset: 0; z-index: 10; background: #1b1b1b; color: #eee; display: flex; flex-direction: column; }
#viewer[hidden] { display: none; }
#viewer .bar { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; padding: 6px 10px; background: #2b2b2b; }
#viewer .bar .group { display: inline-flex; gap: 2px; align-items: center; }
#viewer .bar .group > span { margin-right: 4px; color: #aaa; }
#viewer button { background: #444; color: #eee; border: 1px solid #555; border-radius: 3px; padding: 2px 8px; font: inherit; cursor: pointer; }
#viewer button.on { background: #1f77b4; border-color: #4a9ad4; }
#viewer button:disabled { opacity: 0.35; cursor: default; }
#viewer .shown > span { color: #fff; font-weight: bold; }
#v-name { font-weight: bold; word-break: break-all; max-width: 40%; }
#v-stage { position: relative; flex: 1; overflow: hidden; cursor: grab; touch-action: none;
           background: repeating-conic-gradient(#2a2a2a 0% 25%, #333 0% 50%) 0 0 / 20px 20px; }
#v-stage.panning { cursor: grabbing; }
#v-stage .pane { position: absolute; inset: 0; overflow: hidden; }
#v-stage .layer { position: absolute; left: 0; top: 0; transform-origin: 0 0; overflow: hidden; }
#v-stage .layer img { display: block; max-width: none; user-select: none; -webkit-user-drag: none; }
#v-stage .layer.pixels img { image-rendering: pixelated; }
#v-stage .tag { position: absolute; top: 8px; padding: 2px 8px; background: #000a; border-radius: 3px; pointer-events: none; }
#v-a .tag { left: 8px; } #v-b .tag { right: 8px; } #viewer.toggle #v-b .tag { left: 8px; right: auto; }
#v-stage .pane.broken .tag { color: #f88; }
#v-divider { position: absolute; top: 0; bottom: 0; width: 24px; margin-left: -12px; cursor: ew-resize; }
#v-divider::before { content: ""; position: absolute; left: 11px; top: 0; bottom: 0; border-left: 2px solid #fff; box-shadow: 0 0 3px #000; }
#v-divider::after { content: "\\2194"; position: absolute; left: 0; top: 50%; width: 24px; height: 24px; margin-top: -12px;
                    border-radius: 12px; background: #fff; color: #000; text-align: center; line-height: 24px; }
#viewer.toggle #v-divider { display: none; }
#viewer .help { padding: 4px 10px; color: #999; font-size: 11px; background: #2b2b2b; }
</style></head>
<body>
<h1>zssr-batch report</h1>
<!--RUN-->
<h2>Summary</h2>
<!--SUMMARY-->
<h2>Charts</h2>
<div id="charts"><!--CHARTS--></div>
<p class="note">Point at a bar or a dot to name its image; click it to go to the image.</p>
<div id="tip" hidden></div>
<h2>Images</h2>
<div id="controls">
 <label>sort <select id="sort">
  <option value="gain:-1">gain over bicubic, best first</option><option value="gain:1">gain over bicubic, worst first</option>
  <option value="psnr_y:-1">PSNR-Y, highest first</option><option value="psnr_y:1">PSNR-Y, lowest first</option>
  <option value="fit_seconds:-1">fit time, longest first</option><option value="fit_seconds:1">fit time, shortest first</option>
  <option value="status:1">status (failed first)</option><option value="rel:1">name</option>
 </select></label>
 <label>status <select id="status"><option value="">all</option><option value="ok">ok</option><option value="failed">failed</option></select></label>
 <label>name contains <input id="search" size="16"></label>
 <label>gain at least <input id="mingain" size="5" placeholder="dB"></label>
 <button id="prev">&larr;</button><span id="page"></span><button id="next">&rarr;</button>
</div>
<div id="rows"></div>
<div id="viewer" hidden>
 <div class="bar">
  <span id="v-name"></span>
  <span class="group"><button data-mode="slider" title="two pictures side by side, split by a line you drag">slider</button><button data-mode="toggle" title="one picture at a time (space flips)">toggle</button></span>
  <span class="group" id="v-left" data-side="left"><span>left</span></span>
  <span class="group" id="v-right" data-side="right"><span>right</span></span>
  <span class="group"><button id="v-flip" title="space">flip</button></span>
  <span class="group"><button id="v-out" title="-">&minus;</button><button id="v-in" title="+">+</button><button id="v-fit" title="0">fit</button><button id="v-one" title="1: one image pixel per screen pixel">1:1</button><span id="v-zoom"></span></span>
  <span class="group"><button id="v-prev" title="p">&larr; image</button><button id="v-next" title="n">image &rarr;</button><button id="v-close" title="Esc">close</button></span>
 </div>
 <div id="v-stage">
  <div class="pane" id="v-a"><div class="layer"><img alt="" draggable="false"></div><span class="tag"></span></div>
  <div class="pane" id="v-b"><div class="layer"><img alt="" draggable="false"></div><span class="tag"></span></div>
  <div id="v-divider" title="drag to move the split"></div>
 </div>
 <div class="help">Drag to pan, wheel or +/&minus; to zoom (both sides move together). Keys: space flips the two pictures,
  t switches slider / toggle, b z g put bicubic, ZSSR or the ground truth on the right (toggle: on screen), 0 fits,
  1 is 1:1, arrows pan,
  n / p next or previous image, Esc closes.</div>
</div>
<script type="application/json" id="data"><!--DATA--></script>
<script>
(function () {
  "use strict";
  const all = JSON.parse(document.getElementById("data").textContent);
  const PER_PAGE = 50, THUMB = 192, CROP_SHOWN = 192;
  const KINDS = [["bicubic", "bicubic"], ["zssr", "ZSSR"], ["gt", "ground truth"]];
  const LABEL = {input: "input", bicubic: "bicubic", zssr: "ZSSR", gt: "ground truth"};
  let view = all, page = 0;
  const $ = (id) => document.getElementById(id);
  const fmt = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
  const signed = (v, d) => (v === null || v === undefined) ? "-" : (v >= 0 ? "+" : "") + Number(v).toFixed(d);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
  all.forEach((r, i) => { r.i = i; });

  function key(r, k) {
    if (k === "status") return r.status === "ok" ? 1 : 0;
    if (k === "rel") return r.rel;
    return r[k];
  }
  function apply() {
    const [k, dir] = $("sort").value.split(":");
    const st = $("status").value, q = $("search").value.toLowerCase(), mg = parseFloat($("mingain").value);
    view = all.filter((r) => (!st || r.status === st) && (!q || r.rel.toLowerCase().includes(q))
                            && (isNaN(mg) || (r.gain !== null && r.gain >= mg)));
    const d = Number(dir);
    view.sort((a, b) => {
      const x = key(a, k), y = key(b, k);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;  // missing values last
      if (y === null || y === undefined) return -1;
      return x < y ? -d : x > y ? d : 0;
    });
    page = 0;
    render();
  }

  // The output's size in pixels, which every picture of a row shares (the crop box knows it too).
  function size(r) {
    const w = r.crop ? r.crop.width : r.out_width, h = r.crop ? r.crop.height : r.out_height;
    return w && h ? [w, h] : null;
  }
  function pics(r) {
    if (!r.thumbs) return "";
    const base = r.thumbs + "/", wh = size(r), c = r.crop;
    const k = wh ? Math.min(1, THUMB / Math.max(wh[0], wh[1])) : 0;
    const dims = wh ? `style="width:${Math.round(wh[0] * k)}px;height:${Math.round(wh[1] * k)}px"` : "";
    const box = c && wh ? `<span class="box" style="left:${100 * c.left / wh[0]}%;top:${100 * c.top / wh[1]}%;`
      + `width:${100 * c.side / wh[0]}%;height:${100 * c.side / wh[1]}%"></span>` : "";
    const thumb = (n) => {
      const img = `<img loading="lazy" class="${n === "input" ? "lr" : ""}" ${dims} src="${base + n}.png" alt="${LABEL[n]}">`;
      const link = r.files[n] ? `<a href="${r.files[n]}" target="_blank" title="the full picture">${img}</a>` : img;
      return `<figure><span class="frame">${link}${box}</span><figcaption>${LABEL[n]}</figcaption></figure>`;
    };
    const crop = (n) => `<figure><img loading="lazy" class="crop" data-open="${r.i}" src="${base}crop_${n}.png" alt="crop: ${LABEL[n]}"`
      + ` title="open the viewer here"><figcaption>crop: ${LABEL[n]}</figcaption></figure>`;
    const names = r.gt ? ["input", "bicubic", "zssr", "gt"] : ["input", "bicubic", "zssr"];  // (no 404s to ask for)
    let note = "the crop where ZSSR and bicubic differ most";
    if (c) {
      const mag = CROP_SHOWN / c.side, magIn = r.width ? mag * c.width / r.width : null;
      note = `the ${c.side}&times;${c.side} pixels in the box (x ${c.left}&ndash;${c.left + c.side}, y ${c.top}&ndash;${c.top + c.side}),`
        + ` where ZSSR and bicubic differ most, shown ${+mag.toFixed(2)}&times;`
        + (magIn ? ` (the input's pixels ${+magIn.toFixed(2)}&times;)` : "");
    }
    return `<div class="pics"><div>${names.map(thumb).join("")}</div><div class="cropnote">${note}</div>`
      + `<div>${names.map(crop).join("")}</div>${kernels(r, base)}</div>`;
  }
  // The kernel the fit used and, where known, the one that made the input: one grid of taps, each
  // centred on its centre of mass and white at its own peak (report.kernel_pictures). Not for a
  // plain bicubic fit with no truth to hold it against: every row of an ordinary run would show
  // the same picture.
  function kernels(r, base) {
    if (!r.kernel || (r.kernel_source === "bicubic" && !r.kernel_true)) return "";
    const used = `${esc(r.kernel_source || "kernel")}` + (r.kernel_width === null ? "" : `, ${fmt(r.kernel_width, 2)} px wide`)
      + (r.kernel_anisotropy === null ? "" : `, ${fmt(r.kernel_anisotropy, 2)}:1`);
    const fig = (file, cap) => `<figure><img loading="lazy" class="kernel" src="${base + file}" alt="${cap}"><figcaption>${cap}</figcaption></figure>`;
    return `<div class="kernels">${fig("kernel.png", "kernel used: " + used)}`
      + (r.kernel_true ? fig("kernel_true.png", "true kernel" + (r.kernel_error === null ? "" : `: error ${fmt(r.kernel_error, 3)}`)) : "")
      + `</div>`;
  }
  function entry(r) {
    const g = r.gain === null ? "-" : `<span class="${r.gain >= 0 ? "gain-pos" : "gain-neg"}">${signed(r.gain, 2)} dB</span>`;
    const scores = r.psnr_y === null
      ? `<tr><td colspan="4">no ground truth: no scores</td></tr>`
      : `<tr><td>PSNR-Y</td><td>${fmt(r.psnr_y, 2)} dB</td><td>bicubic</td><td>${fmt(r.bicubic_psnr_y, 2)} dB</td></tr>`
        + `<tr><td>gain</td><td>${g}</td></tr>`
        + `<tr><td>SSIM-Y</td><td>${fmt(r.ssim_y, 4)}</td><td>bicubic</td><td>${fmt(r.bicubic_ssim_y, 4)}</td></tr>`;
    const nums = r.status === "ok"
      ? `<table class="nums">${scores}`
        + `<tr><td>size</td><td colspan="3">${r.width}&times;${r.height} &rarr; ${r.out_width}&times;${r.out_height} (x${esc(r.scale)})</td></tr>`
        + `<tr><td>fit</td><td>${fmt(r.fit_seconds, 1)} s</td><td>steps</td><td>${fmt(r.iterations, 0)}</td></tr>`
        + `<tr><td>infer</td><td>${fmt(r.infer_seconds, 1)} s</td><td>node</td><td>${esc(r.node)}</td></tr></table>`
      : `<div class="error">${esc(r.error)}</div>`;
    const open = viewable(r) ? `<button class="open" data-open="${r.i}">compare at full resolution</button>` : "";
    const curve = r.curve ? `<img loading="lazy" class="curve" src="${r.curve}" alt="loss and learning rate">` : "";
    return `<div class="entry ${esc(r.status)}" data-i="${r.i}" data-rel="${esc(r.rel)}" data-status="${esc(r.status)}" data-gain="${r.gain === null ? "" : r.gain}">`
      + `<div class="info"><div class="name">${esc(r.rel)}</div>${nums}${open}${curve}</div>${pics(r)}</div>`;
  }
  function render() {
    const pages = Math.max(1, Math.ceil(view.length / PER_PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    $("rows").innerHTML = view.slice(page * PER_PAGE, (page + 1) * PER_PAGE).map(entry).join("");
    $("page").textContent = ` page ${page + 1} of ${pages} (${view.length} images) `;
    // a thumbnail that is not there (an old report, a deleted file) leaves no broken picture
    $("rows").querySelectorAll(".pics img").forEach((img) => img.addEventListener("error", () => img.closest("figure").remove()));
  }
  // Bring image i's entry on screen: on its page, with the filters cleared if they hide it.
  function reveal(i) {
    const r = all[i];
    if (!view.includes(r)) {
      $("status").value = ""; $("search").value = ""; $("mingain").value = "";
      apply();
    }
    page = Math.floor(view.indexOf(r) / PER_PAGE);
    render();
    const el = document.querySelector(`.entry[data-i="${i}"]`);
    el.classList.add("hit");
    el.scrollIntoView({block: "center"});
  }

  const TIPS = {
    "chart-gain": (r) => `gain ${signed(r.gain, 2)} dB`,
    "chart-scatter": (r) => `ZSSR ${fmt(r.psnr_y, 2)} dB, bicubic ${fmt(r.bicubic_psnr_y, 2)} dB`,
    "chart-time": (r) => `fit ${fmt(r.fit_seconds, 1)} s`,
  };
  const tip = $("tip");
  $("charts").addEventListener("mouseover", (e) => {
    const p = e.target.closest("[data-i]");
    if (!p) return;
    const r = all[Number(p.dataset.i)], chart = p.closest("svg").id;
    tip.textContent = r.rel + "\\n" + (TIPS[chart] ? TIPS[chart](r) : "");
    tip.hidden = false;
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 4) + "px";
    tip.style.top = (e.clientY + 14) + "px";
  });
  $("charts").addEventListener("mouseout", (e) => { if (e.target.closest("[data-i]")) tip.hidden = true; });
  $("charts").addEventListener("click", (e) => {
    const p = e.target.closest("[data-i]");
    if (p) { tip.hidden = true; reveal(Number(p.dataset.i)); }
  });

  // ---- the viewer: up to three full-resolution pictures of one image, in one shared frame ----
  // Both panes hold a layer of the output's size under the same transform (translate, then scale
  // about the top left corner), so that a pixel of one sits on the same pixel of the other at any
  // zoom; the slider clips the right pane to the right of the split, in screen pixels.
  const V = {r: null, mode: "slider", left: "bicubic", right: "zssr", showRight: true,
             s: 1, tx: 0, ty: 0, split: 0.5, w: 0, h: 0, drag: null};
  const viewer = $("viewer"), stage = $("v-stage"), divider = $("v-divider");
  const panes = {left: $("v-a"), right: $("v-b")};
  function viewable(r) { return KINDS.filter(([k]) => r.files[k]).length > 0; }
  for (const side of ["left", "right"]) {
    const group = $(side === "left" ? "v-left" : "v-right");
    for (const [k, label] of KINDS) {
      const b = document.createElement("button");
      b.dataset.kind = k; b.textContent = label;
      b.addEventListener("click", () => choose(side, k));
      group.appendChild(b);
    }
  }
  function choose(side, k) {
    if (!V.r.files[k]) return;
    V[side] = k;
    if (V.mode === "toggle") V.showRight = side === "right";
    show();
  }
  function load(side) {
    const pane = panes[side], img = pane.querySelector("img"), k = V[side], src = V.r.files[k];
    pane.classList.remove("broken");
    pane.querySelector(".tag").textContent = LABEL[k];
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
  }
  function show() {
    load("left"); load("right");
    viewer.classList.toggle("toggle", V.mode === "toggle");
    viewer.querySelectorAll("[data-mode]").forEach((b) => b.classList.toggle("on", b.dataset.mode === V.mode));
    for (const side of ["left", "right"]) {
      const group = $(side === "left" ? "v-left" : "v-right");
      group.firstChild.textContent = V.mode === "slider" ? side : (side === "left" ? "A" : "B");
      group.classList.toggle("shown", V.mode === "toggle" && (side === "right") === V.showRight);
      group.querySelectorAll("button").forEach((b) => {
        b.disabled = !V.r.files[b.dataset.kind];
        b.classList.toggle("on", b.dataset.kind === V[side]);
      });
    }
    place();
  }
  function place() {
    const t = `translate(${V.tx}px, ${V.ty}px) scale(${V.s})`, x = V.split * stage.clientWidth;
    for (const pane of Object.values(panes)) {
      const layer = pane.querySelector(".layer");
      layer.style.transform = t;
      layer.style.width = V.w + "px"; layer.style.height = V.h + "px";
      layer.classList.toggle("pixels", V.s * devicePixelRatio >= 2);  // zoomed in: pixels, not a blur
    }
    const slider = V.mode === "slider";
    panes.right.style.clipPath = slider ? `inset(0 0 0 ${x}px)` : "none";
    panes.left.style.visibility = slider || !V.showRight ? "visible" : "hidden";
    panes.right.style.visibility = slider || V.showRight ? "visible" : "hidden";
    divider.style.left = x + "px";
    $("v-zoom").textContent = Math.round(V.s * devicePixelRatio * 100) + "%";
  }
  function fitScale() { return Math.min(stage.clientWidth / V.w, stage.clientHeight / V.h); }
  function fit() {
    V.s = fitScale();
    V.tx = (stage.clientWidth - V.w * V.s) / 2; V.ty = (stage.clientHeight - V.h * V.s) / 2;
    place();
  }
  // Zoom by f about the stage point (x, y), which stays over the same picture pixel.
  function zoomAt(x, y, f) {
    const s = Math.min(64, Math.max(Math.min(fitScale(), 1) / 4, V.s * f));
    V.tx = x - (x - V.tx) * s / V.s; V.ty = y - (y - V.ty) * s / V.s; V.s = s;
    place();
  }
  function zoomCentre(f) { zoomAt(stage.clientWidth / 2, stage.clientHeight / 2, f); }
  function openViewer(i, region) {
    const r = all[i], have = KINDS.map(([k]) => k).filter((k) => r.files[k]);
    if (!have.length) return;
    V.r = r;
    const wh = size(r);
    [V.w, V.h] = wh || [0, 0];
    if (!have.includes(V.left)) V.left = have[0];
    if (!have.includes(V.right) || (V.right === V.left && have.length > 1)) V.right = have.find((k) => k !== V.left) || have[0];
    $("v-name").textContent = r.rel;
    document.activeElement.blur();  // the keys are the viewer's, not a button's left focused under it
    viewer.hidden = false;
    document.body.classList.add("viewing");
    show();
    if (V.w) fit();
    if (V.w && region) {  // the crop's box filling most of the stage
      V.s = 0.8 * Math.min(stage.clientWidth, stage.clientHeight) / region.side;
      V.tx = stage.clientWidth / 2 - (region.left + region.side / 2) * V.s;
      V.ty = stage.clientHeight / 2 - (region.top + region.side / 2) * V.s;
      place();
    }
  }
  function closeViewer() {
    viewer.hidden = true;
    document.body.classList.remove("viewing");
  }
  function step(d) {  // the next image that has pictures to compare, in the order of the list
    for (let j = view.indexOf(V.r) + d; j >= 0 && j < view.length; j += d) {
      if (viewable(view[j])) { openViewer(view[j].i); return; }
    }
  }
  for (const [side, pane] of Object.entries(panes)) {
    const img = pane.querySelector("img");
    img.addEventListener("load", () => {
      if (!V.w) { V.w = img.naturalWidth; V.h = img.naturalHeight; fit(); }  // a row that does not say its size
    });
    img.addEventListener("error", () => {
      if (!img.getAttribute("src")) return;
      pane.classList.add("broken");
      pane.querySelector(".tag").textContent = `${LABEL[V[side]]}: cannot load ${decodeURI(img.getAttribute("src"))}`;
    });
  }
  document.addEventListener("click", (e) => {
    const t = e.target.closest("[data-open]");
    if (!t) return;
    const r = all[Number(t.dataset.open)];
    openViewer(r.i, t.classList.contains("crop") ? r.crop : null);
  });
  viewer.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => { V.mode = b.dataset.mode; show(); }));
  function flip() {
    if (V.mode === "toggle") V.showRight = !V.showRight;
    else [V.left, V.right] = [V.right, V.left];
    show();
  }
  // a click leaves no button focused, where space would press it again as well as flip
  viewer.querySelector(".bar").addEventListener("mousedown", (e) => e.preventDefault());
  $("v-flip").addEventListener("click", flip);
  $("v-in").addEventListener("click", () => zoomCentre(1.5));
  $("v-out").addEventListener("click", () => zoomCentre(1 / 1.5));
  $("v-fit").addEventListener("click", fit);
  $("v-one").addEventListener("click", () => zoomCentre(1 / devicePixelRatio / V.s));
  $("v-prev").addEventListener("click", () => step(-1));
  $("v-next").addEventListener("click", () => step(1));
  $("v-close").addEventListener("click", closeViewer);
  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    const b = stage.getBoundingClientRect(), dy = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1);
    zoomAt(e.clientX - b.left, e.clientY - b.top, Math.exp(-dy * 0.002));
  }, {passive: false});
  stage.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    stage.setPointerCapture(e.pointerId);
    V.drag = e.target === divider ? {split: true} : {x: e.clientX, y: e.clientY, tx: V.tx, ty: V.ty};
    stage.classList.toggle("panning", !V.drag.split);
  });
  stage.addEventListener("pointermove", (e) => {
    if (!V.drag) return;
    if (V.drag.split) {
      const b = stage.getBoundingClientRect();
      V.split = Math.min(1, Math.max(0, (e.clientX - b.left) / b.width));
    } else {
      V.tx = V.drag.tx + e.clientX - V.drag.x; V.ty = V.drag.ty + e.clientY - V.drag.y;
    }
    place();
  });
  const release = () => { V.drag = null; stage.classList.remove("panning"); };
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);
  window.addEventListener("resize", () => { if (!viewer.hidden) place(); });
  document.addEventListener("keydown", (e) => {
    if (viewer.hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    const pan = 0.1 * Math.min(stage.clientWidth, stage.clientHeight);
    const keys = {
      "Escape": closeViewer, " ": flip, "t": () => { V.mode = V.mode === "slider" ? "toggle" : "slider"; show(); },
      "b": () => choose(V.mode === "toggle" && !V.showRight ? "left" : "right", "bicubic"),
      "z": () => choose(V.mode === "toggle" && !V.showRight ? "left" : "right", "zssr"),
      "g": () => choose(V.mode === "toggle" && !V.showRight ? "left" : "right", "gt"),
      "+": () => zoomCentre(1.5), "=": () => zoomCentre(1.5), "-": () => zoomCentre(1 / 1.5),
      "0": fit, "1": () => zoomCentre(1 / devicePixelRatio / V.s),
      "ArrowLeft": () => { V.tx += pan; place(); }, "ArrowRight": () => { V.tx -= pan; place(); },
      "ArrowUp": () => { V.ty += pan; place(); }, "ArrowDown": () => { V.ty -= pan; place(); },
      "n": () => step(1), "PageDown": () => step(1), "p": () => step(-1), "PageUp": () => step(-1),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });

  ["sort", "status"].forEach((id) => $(id).addEventListener("change", apply));
  ["search", "mingain"].forEach((id) => $(id).addEventListener("input", apply));
  $("prev").addEventListener("click", () => { page--; render(); });
  $("next").addEventListener("click", () => { page++; render(); });
  apply();
  document.body.dataset.ready = "1";
})();
</script>
</body></html>
"""
