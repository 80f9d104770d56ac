"""Shared fixtures: the benchmark images in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("ZSSR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def have_data() -> bool:
    return (DATA / "Set5" / "HR").is_dir()


needs_data = pytest.mark.skipif(
    not have_data(), reason=f"benchmark images not found at {DATA} (set ZSSR_DATA to the shared/data folder)"
)


def lr_path(set_name: str, name: str, scale: int) -> Path:
    return DATA / set_name / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"


def hr_path(set_name: str, name: str) -> Path:
    return DATA / set_name / "HR" / f"{name}.png"


def names(set_name: str) -> list[str]:
    return sorted(p.stem for p in (DATA / set_name / "HR").glob("*.png"))
