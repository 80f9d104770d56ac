"""``report.html``: one page that opens from disk (no server, no network) to judge a run by eye.

At the top the run (from ``run.json``), the summary table and three charts
(PSNR-Y gain per image sorted, ZSSR vs bicubic PSNR-Y, fit time per image),
drawn as inline SVG. Below, one entry per image, sortable and filterable, drawn
page by page from JSON embedded in the page, so that 10,000 images open in
seconds: thumbnails of input / bicubic / ZSSR / ground truth, the zoomed crop
where ZSSR and bicubic differ most, the fit's loss and learning-rate curve, and
its numbers; failed images show their error. The pictures are the small files
the workers made once (``.report/thumbs/``, ``.report/curves/``), linked by relative paths.
"""

from __future__ import annotations

import json
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ..files.images import write_atomic
from ..files.plan import REPORT_PICTURES, picture_name
from .plots import scatter, sorted_bars
from .row import PAGE_NUMBERS
from .table import read_report, summarize



def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _url(path: str) -> str:
    return quote(path, errors="surrogateescape")  # a name that is not UTF-8 still links to its file


def _pictures(r: dict, out_dir: Path, rel: str) -> tuple[str, str]:
    """(the URL of a row's thumbnail folder, of its curve), relative to report.html; '' where there
    is none. They are named after the row's output under .report/ (``files.plan.REPORT_PICTURES``);
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
            return (_url(thumbs.as_posix()) if has_thumbs else ""), (_url(curve.as_posix()) if has_curve else "")
    return "", ""


def page_rows(df: pd.DataFrame, out_dir: Path) -> list[dict]:
    rows = []
    for r in df.to_dict("records"):
        rel = r.get("rel") if isinstance(r.get("rel"), str) and r.get("rel") else Path(str(r["input"])).name
        row = {k: _clean(r.get(k)) for k in PAGE_NUMBERS}
        gain = None if row["psnr_y"] is None or row["bicubic_psnr_y"] is None else row["psnr_y"] - row["bicubic_psnr_y"]
        thumbs, curve = _pictures(r, out_dir, rel)
        row.update(rel=rel, status=str(r.get("status")), error=r.get("error") if isinstance(r.get("error"), str) else "",
                   gain=gain, node=str(r.get("node") or ""), scale=str(r.get("scale") or ""),
                   thumbs=thumbs, curve=curve)
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


def _summary_table(out_dir: Path) -> str:
    table = summarize(out_dir / "report.csv")
    if table.empty:
        return "<p>no images</p>"
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", classes="summary",
                         border=0)


def write_html_report(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    df = read_report(out_dir / "report.csv", PAGE_NUMBERS)
    info = {}
    if (out_dir / "run.json").is_file():
        info = json.loads((out_dir / "run.json").read_text())
    rows = page_rows(df, out_dir)
    ok = df[df["status"] == "ok"]
    charts = "".join([
        sorted_bars((ok["psnr_y"] - ok["bicubic_psnr_y"]).tolist(), w=360, h=200, ylabel="dB",
                    ident="chart-gain", title="PSNR-Y gain over bicubic, per image"),
        scatter(ok["bicubic_psnr_y"].tolist(), ok["psnr_y"].tolist(), w=300, h=200, xlabel="bicubic PSNR-Y (dB)",
                ylabel="ZSSR PSNR-Y (dB)", ident="chart-scatter", title="ZSSR vs bicubic"),
        sorted_bars(ok["fit_seconds"].tolist(), w=360, h=200, ylabel="seconds", ident="chart-time",
                    title="fit time per image"),
    ])
    data = json.dumps(rows, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    html = _TEMPLATE.format(run=_run_table(info), summary=_summary_table(out_dir), charts=charts, data=data,
                            title=escape(str(out_dir.name)))
    path = out_dir / "report.html"
    write_atomic(path, html.encode("utf-8", "replace"))  # a name that is not UTF-8 shows as '?'
    return path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zssr-batch report: {title}</title>
<style>
body {{ font: 13px/1.4 sans-serif; margin: 16px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }} h2 {{ font-size: 16px; margin: 18px 0 6px; }}
table.run th {{ text-align: left; padding-right: 12px; color: #555; font-weight: normal; }}
table.summary {{ border-collapse: collapse; }} table.summary td, table.summary th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
#charts svg {{ margin-right: 12px; border: 1px solid #eee; }}
#controls {{ margin: 8px 0; display: flex; gap: 12px; flex-wrap: wrap; align-items: center; }}
.entry {{ border-top: 1px solid #ddd; padding: 8px 0; display: flex; gap: 12px; flex-wrap: wrap; }}
.entry.failed {{ background: #fff4f4; }}
.entry .name {{ font-weight: bold; word-break: break-all; }}
.entry .nums td {{ padding: 0 6px 0 0; }}
.pics figure {{ display: inline-block; margin: 0 4px 0 0; text-align: center; font-size: 11px; color: #555; }}
.pics img {{ display: block; max-width: 160px; max-height: 160px; }}
.pics img.crop {{ width: 128px; height: 128px; image-rendering: pixelated; }}
.error {{ color: #b00; }}
.gain-pos {{ color: #070; }} .gain-neg {{ color: #b00; }}
</style></head>
<body>
<h1>zssr-batch report</h1>
{run}
<h2>Summary</h2>
{summary}
<h2>Charts</h2>
<div id="charts">{charts}</div>
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
<script type="application/json" id="data">{data}</script>
<script>
(function () {{
  const all = JSON.parse(document.getElementById("data").textContent);
  const PER_PAGE = 50;
  let view = all, page = 0;
  const $ = (id) => document.getElementById(id);
  const fmt = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}})[c]);
  function key(r, k) {{
    if (k === "status") return r.status === "ok" ? 1 : 0;
    if (k === "rel") return r.rel;
    return r[k];
  }}
  function apply() {{
    const [k, dir] = $("sort").value.split(":");
    const st = $("status").value, q = $("search").value.toLowerCase(), mg = parseFloat($("mingain").value);
    view = all.filter((r) => (!st || r.status === st) && (!q || r.rel.toLowerCase().includes(q))
                            && (isNaN(mg) || (r.gain !== null && r.gain >= mg)));
    const d = Number(dir);
    view.sort((a, b) => {{
      const x = key(a, k), y = key(b, k);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;  // missing values last
      if (y === null || y === undefined) return -1;
      return x < y ? -d : x > y ? d : 0;
    }});
    page = 0;
    render();
  }}
  function pics(r) {{
    if (!r.thumbs) return "";
    const base = r.thumbs + "/";
    const names = ["input", "bicubic", "zssr", "gt"];
    const fig = (src, label, cls) => `<figure><img loading="lazy" ${{cls ? 'class="' + cls + '"' : ""}} src="${{src}}" alt="${{label}}" onerror="this.parentNode.remove()"><figcaption>${{label}}</figcaption></figure>`;
    return `<div class="pics"><div>${{names.map((n) => fig(base + n + ".png", n)).join("")}}</div>`
      + `<div>${{names.map((n) => fig(base + "crop_" + n + ".png", "crop: " + n, "crop")).join("")}}</div></div>`;
  }}
  function entry(r) {{
    const g = r.gain === null ? "-" : `<span class="${{r.gain >= 0 ? "gain-pos" : "gain-neg"}}">${{r.gain >= 0 ? "+" : ""}}${{fmt(r.gain, 2)}} dB</span>`;
    const nums = r.status === "ok"
      ? `<table class="nums"><tr><td>PSNR-Y</td><td>${{fmt(r.psnr_y, 2)}}</td><td>bicubic</td><td>${{fmt(r.bicubic_psnr_y, 2)}}</td><td>gain</td><td>${{g}}</td></tr>`
        + `<tr><td>SSIM-Y</td><td>${{fmt(r.ssim_y, 4)}}</td><td>bicubic</td><td>${{fmt(r.bicubic_ssim_y, 4)}}</td></tr>`
        + `<tr><td>size</td><td colspan="3">${{r.width}}x${{r.height}} &rarr; ${{r.out_width}}x${{r.out_height}} (x${{esc(r.scale)}})</td></tr>`
        + `<tr><td>fit</td><td>${{fmt(r.fit_seconds, 1)}} s</td><td>steps</td><td>${{fmt(r.iterations, 0)}}</td><td>infer</td><td>${{fmt(r.infer_seconds, 1)}} s</td></tr>`
        + `<tr><td>node</td><td colspan="5">${{esc(r.node)}}</td></tr></table>`
      : `<div class="error">${{esc(r.error)}}</div>`;
    const curve = r.curve ? `<img loading="lazy" class="curve" src="${{r.curve}}" alt="loss and learning rate">` : "";
    return `<div class="entry ${{esc(r.status)}}" data-rel="${{esc(r.rel)}}" data-status="${{esc(r.status)}}" data-gain="${{r.gain === null ? "" : r.gain}}">`
      + `<div><div class="name">${{esc(r.rel)}}</div>${{nums}}</div>${{pics(r)}}${{curve}}</div>`;
  }}
  function render() {{
    const pages = Math.max(1, Math.ceil(view.length / PER_PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    $("rows").innerHTML = view.slice(page * PER_PAGE, (page + 1) * PER_PAGE).map(entry).join("");
    $("page").textContent = ` page ${{page + 1}} of ${{pages}} (${{view.length}} images) `;
  }}
  ["sort", "status"].forEach((id) => $(id).addEventListener("change", apply));
  ["search", "mingain"].forEach((id) => $(id).addEventListener("input", apply));
  $("prev").addEventListener("click", () => {{ page--; render(); }});
  $("next").addEventListener("click", () => {{ page++; render(); }});
  apply();
  document.body.dataset.ready = "1";
}})();
</script>
</body></html>
"""
