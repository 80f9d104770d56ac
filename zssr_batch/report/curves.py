"""A fit's training curve (loss, learning rate and reconstruction error per step) as CSV and as SVG.

The CSV is ``--save-curve``'s file and ``report.html``'s data; the SVG is the chart the page
shows beside the image's thumbnails.
"""

from __future__ import annotations

import csv
import io

from ..engine.super_resolve import SRResult
from .plots import lines


def curve_csv(result: SRResult) -> str:
    log = result.log
    rec = dict(zip(log.test_steps, log.rec_mse))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "scale_step", "loss", "lr", "reconstruction_mse"])
    for i, (loss, lr, st) in enumerate(zip(log.loss, log.lr, log.scale_step)):
        w.writerow([i, st, f"{loss:.6g}", f"{lr:.3g}", f"{rec[i]:.6g}" if i in rec else ""])
    return buf.getvalue()


def curve_svg(result: SRResult) -> str:
    log = result.log
    steps = list(range(len(log.loss)))
    loss = lines([("L1 loss", steps, log.loss), ("reconstruction MSE", log.test_steps, log.rec_mse)],
                 w=300, h=150, xlabel="step", ylabel="error (log scale)", log_y=True, title="loss")
    rate = lines([("learning rate", steps, log.lr)], w=300, h=110, xlabel="step", ylabel="rate (log)", log_y=True,
                 title="learning rate")
    body = loss.replace("<svg ", '<svg y="0" ', 1) + rate.replace("<svg ", '<svg y="150" ', 1)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="260" viewBox="0 0 300 260">{body}</svg>'
