"""Published PSNR-Y figures (dB) that benchmark tables are put beside.

ZSSR's are from the paper (Shocher, Cohen & Irani, CVPR 2018, bicubic kernel). Three figures
are only quoted second hand (by later papers' tables) and are marked unverified until a primary
source is found: a table shows them with a question mark.
"""

from __future__ import annotations

BICUBIC = {("Set5", 2): 33.64, ("Set5", 3): 30.39, ("Set5", 4): 28.42,
           ("Set14", 2): 30.22, ("Set14", 3): 27.53, ("Set14", 4): 25.99,
           ("BSD100", 2): 29.55, ("BSD100", 3): 27.20, ("BSD100", 4): 25.96}
ZSSR_PAPER = {("Set5", 2): 37.37, ("Set5", 3): 33.42, ("Set5", 4): 31.13,
              ("Set14", 2): 33.00, ("Set14", 4): 28.01, ("BSD100", 4): 27.12}
ZSSR_SECOND_HAND = {("Set14", 3): 29.80, ("BSD100", 2): 31.65, ("BSD100", 3): 28.67}


def zssr_published(set_name: str, scale: int) -> tuple[float | None, bool]:
    """(the published ZSSR figure or None, whether it is from the paper itself)."""
    key = (set_name, scale)
    if key in ZSSR_PAPER:
        return ZSSR_PAPER[key], True
    return ZSSR_SECOND_HAND.get(key), False
