"""Small inline-SVG charts (no plotting library, no network): lines, scatter, ranked bars or dots.

Each function returns an ``<svg>`` element as a string; the HTML report embeds
the run's charts inline and links each fit's curve as its own small ``.svg`` file.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if 1000 <= abs(v) < 1e6 and v == int(v):  # steps, image counts: 3000, not 3e+03
        return f"{v:.0f}"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}"
    return f"{v:.3g}"


class Frame:
    """Maps data to pixels inside a plot area with margins for the axes."""

    def __init__(self, w: int, h: int, x: tuple[float, float], y: tuple[float, float], log_y: bool = False,
                 margin: tuple[int, int, int, int] = (10, 10, 30, 44)) -> None:
        self.w, self.h, self.log_y = w, h, log_y
        self.top, self.right, self.bottom, self.left = margin
        self.x0, self.x1 = x if x[1] > x[0] else (x[0] - 0.5, x[0] + 0.5)
        y0, y1 = (math.log10(y[0]), math.log10(y[1])) if log_y else y
        self.y0, self.y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y0 + 0.5)

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        v = math.log10(y) if self.log_y else y
        return self.h - self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[float] | None = None) -> str:
        parts = [f'<line x1="{self.left}" y1="{self.h - self.bottom}" x2="{self.w - self.right}" '
                 f'y2="{self.h - self.bottom}" stroke="#888"/>',
                 f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{self.h - self.bottom}" stroke="#888"/>']
        for t in _ticks(self.x0, self.x1) if xticks is None else xticks:
            parts.append(f'<text x="{self.px(t):.1f}" y="{self.h - self.bottom + 12}" font-size="9" '
                         f'text-anchor="middle">{_fmt(t)}</text>')
        if self.log_y:
            mults = (1, 2, 5) if self.y1 - self.y0 < 2 else (1,)  # a short span needs 2x and 5x ticks too
            yt = [m * 10 ** e for e in range(math.floor(self.y0), math.ceil(self.y1) + 1) for m in mults
                  if self.y0 - 1e-9 <= e + math.log10(m) <= self.y1 + 1e-9]
        else:
            yt = _ticks(self.y0, self.y1)
        for t in yt:
            y = self.py(t)
            parts.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.w - self.right}" y2="{y:.1f}" '
                         f'stroke="#eee"/><text x="{self.left - 3}" y="{y + 3:.1f}" font-size="9" '
                         f'text-anchor="end">{_fmt(t)}</text>')
        parts.append(f'<text x="{(self.left + self.w - self.right) / 2:.0f}" y="{self.h - 3}" font-size="10" '
                     f'text-anchor="middle">{escape(xlabel)}</text>')
        parts.append(f'<text x="10" y="{(self.top + self.h - self.bottom) / 2:.0f}" font-size="10" '
                     f'text-anchor="middle" transform="rotate(-90 10 {(self.top + self.h - self.bottom) / 2:.0f})">'
                     f'{escape(ylabel)}</text>')
        return "".join(parts)


def _svg(w: int, h: int, body: str, ident: str = "", title: str = "") -> str:
    idattr = f' id="{escape(ident)}"' if ident else ""
    head = f'<text x="{w / 2:.0f}" y="11" font-size="11" text-anchor="middle" font-weight="bold">{escape(title)}</text>' \
        if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg"{idattr} class="chart" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="sans-serif">{head}{body}</svg>')


def _finite(xs: Sequence[float], ys: Sequence[float], log_y: bool = False) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(xs, ys)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]


def lines(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], w: int = 320, h: int = 160,
          xlabel: str = "", ylabel: str = "", log_y: bool = False, ident: str = "", title: str = "") -> str:
    """One polyline per (label, xs, ys); a legend in the top right corner."""
    pts = [_finite(xs, ys, log_y) for _, xs, ys in series]
    allp = [p for ps in pts for p in ps]
    if not allp:
        return _svg(w, h, '<text x="50%" y="50%" text-anchor="middle" font-size="11">no data</text>', ident, title)
    top = (16 if title else 6) + 11 * len(series)  # the legend sits above the plot, never on the lines
    f = Frame(w, h, (min(p[0] for p in allp), max(p[0] for p in allp)),
              (min(p[1] for p in allp), max(p[1] for p in allp)), log_y, margin=(top, 10, 30, 44))
    body = [f.axes(xlabel, ylabel)]
    for i, ((label, _, _), ps) in enumerate(zip(series, pts)):
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="'
                    + " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in ps) + '"/>')
        if len(ps) <= 100:  # sparse series (a test every 50 steps) get markers: one point draws no line
            body.append(f'<g fill="{color}">' + "".join(
                f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="1.8"/>' for x, y in ps) + "</g>")
        body.append(f'<text x="{w - 12}" y="{top - 3 - 11 * (len(series) - 1 - i)}" font-size="9" '
                    f'text-anchor="end" fill="{color}">{escape(label)}</text>')
    return _svg(w, h, "".join(body), ident, title)


def _padded(lo: float, hi: float, share: float = 0.06) -> tuple[float, float]:
    """(lo, hi) widened so that the points at either end sit inside the frame, not on its lines."""
    pad = (hi - lo) * share if hi > lo else max(abs(lo) * share, 0.5)
    return lo - pad, hi + pad


def _key(keys: Sequence[object] | None, i: int) -> str:
    return f' data-i="{escape(str(keys[i]))}"' if keys is not None else ""


def scatter(xs: Sequence[float], ys: Sequence[float], w: int = 320, h: int = 240, xlabel: str = "",
            ylabel: str = "", diagonal: bool = True, ident: str = "", title: str = "",
            keys: Sequence[object] | None = None) -> str:
    """Points, with the y = x line (points above it: ZSSR beats bicubic). ``keys``: one per point,
    its ``data-i`` (report.html names the point's image on hover and links to it)."""
    ps = [(x, y, i) for i, (x, y) in enumerate(zip(xs, ys))
          if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if not ps:
        return _svg(w, h, '<text x="50%" y="50%" text-anchor="middle" font-size="11">no data</text>', ident, title)
    lo = min(min(p[0] for p in ps), min(p[1] for p in ps))
    hi = max(max(p[0] for p in ps), max(p[1] for p in ps))
    span = _padded(lo, hi)
    f = Frame(w, h, span, span, margin=(16 if title else 10, 10, 30, 44))
    body = [f.axes(xlabel, ylabel)]
    if diagonal:
        body.append(f'<line x1="{f.px(span[0]):.1f}" y1="{f.py(span[0]):.1f}" x2="{f.px(span[1]):.1f}" '
                    f'y2="{f.py(span[1]):.1f}" stroke="#aaa" stroke-dasharray="4 3"/>')
    body.append('<g fill="#1f77b4" fill-opacity="0.6">' + "".join(
        f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3"{_key(keys, i)}/>' for x, y, i in ps) + "</g>")
    return _svg(w, h, "".join(body), ident, title)


# Up to this many values are bars; more are dots, which stay apart and can be pointed at where
# thousands of bars would merge into one shape.
MAX_BARS = 60


def ranked(values: Sequence[float], w: int = 320, h: int = 160, xlabel: str = "images, highest first",
           ylabel: str = "", ident: str = "", title: str = "", keys: Sequence[object] | None = None) -> str:
    """One bar (or, past ``MAX_BARS``, one dot) per value, sorted high to low; 0 marked.
    ``keys``: as ``scatter``'s."""
    vs = sorted(((v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)), key=lambda p: -p[0])
    if not vs:
        return _svg(w, h, '<text x="50%" y="50%" text-anchor="middle" font-size="11">no data</text>', ident, title)
    n = len(vs)
    lo, hi = min(0.0, vs[-1][0]), max(0.0, vs[0][0])
    pad = (hi - lo) * 0.05  # on the side away from 0 only: the bars still stand on the axis
    # ranks 1..n, each in a slot one wide: a single image is a bar in the middle, not a line on the axis
    f = Frame(w, h, (0.5, n + 0.5), (lo - pad if lo < 0 else lo, hi + pad if hi > 0 else hi),
              margin=(16 if title else 10, 10, 30, 44))
    ticks = [t for t in _ticks(1, max(n, 2)) if t == int(t) and t <= n] or [1]
    zero = f.py(0)
    body = [f.axes(xlabel, ylabel, xticks=ticks)]
    if n <= MAX_BARS:
        bw = min(40.0, (f.px(1.5) - f.px(0.5)) * 0.8)
        body.append('<g fill="#2ca02c" fill-opacity="0.7">' + "".join(
            f'<rect x="{f.px(r + 1) - bw / 2:.1f}" y="{min(zero, f.py(v)):.1f}" width="{bw:.1f}" '
            f'height="{max(abs(zero - f.py(v)), 0.5):.1f}"{_key(keys, i)}/>' for r, (v, i) in enumerate(vs)) + "</g>")
    else:
        body.append('<g fill="#2ca02c" fill-opacity="0.7">' + "".join(
            f'<circle cx="{f.px(r + 1):.1f}" cy="{f.py(v):.1f}" r="2"{_key(keys, i)}/>' for r, (v, i) in enumerate(vs))
            + "</g>")
    body.append(f'<line x1="{f.left}" x2="{w - f.right}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#333"/>')
    return _svg(w, h, "".join(body), ident, title)
