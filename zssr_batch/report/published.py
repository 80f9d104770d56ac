"""Published PSNR-Y figures (dB) to put our benchmark tables beside, and the table maker."""

from __future__ import annotations

from typing import Mapping

BICUBIC = {("Set5", 2): 33.64, ("Set5", 3): 30.39, ("Set5", 4): 28.42,
           ("Set14", 2): 30.22, ("Set14", 3): 27.53, ("Set14", 4): 25.99,
           ("BSD100", 2): 29.55, ("BSD100", 3): 27.20, ("BSD100", 4): 25.96}
ZSSR_PAPER = {("Set5", 2): 37.37, ("Set5", 3): 33.42, ("Set5", 4): 31.13, ("Set14", 2): 33.00}


def markdown_table(rows: list[Mapping[str, object]]) -> str:
    """rows: set, scale, images, psnr_y, ssim_y, bicubic_psnr_y, seconds_per_image -> a Markdown table."""
    head = ("| set | scale | images | PSNR-Y | SSIM-Y | bicubic (ours / published) | ZSSR paper | "
            "vs paper | s / image |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        key = (str(r["set"]), int(r["scale"]))
        paper = ZSSR_PAPER.get(key)
        pub = BICUBIC.get(key)
        lines.append(
            f"| {r['set']} | x{r['scale']} | {r['images']} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | "
            f"{r['bicubic_psnr_y']:.2f} / {pub if pub else '-'} | {paper if paper else '-'} | "
            f"{(r['psnr_y'] - paper) if paper else float('nan'):+.2f} | {r['seconds_per_image']:.1f} |")
    return "\n".join(lines)
