"""``run.json``: what a run was asked, where and with what it ran, and what came of it.

Written once at the end, atomically, beside report.csv; ``report.html`` shows it at the top.
"""

from __future__ import annotations

import json
import platform
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from .. import __version__
from ..files.images import write_atomic
from ..report.row import timestamp
from .settings import RunSettings


def write_run_json(out: Path, settings: RunSettings, counts: dict[str, int], total: int, t_start: float,
                   t_end: float, actors: dict[str, Any], stop_reason: str | None, pack_ways: dict[str, int]) -> None:
    """``actors``: how many, and on which nodes with what (``driver.actors_info``); ``pack_ways``: images
    by how their pack ran (``run.batch.pack_way``), none for one-image fits."""
    import numpy
    import torch

    info = {
        "command": settings.command,
        "engine": settings.engine,
        "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
                if k not in ("engine", "command")},
        "versions": {"zssr_batch": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "ray": ray.__version__, "numpy": numpy.__version__},
        "machine": {"host": socket.gethostname(), "platform": platform.platform(),
                    "cuda": torch.cuda.is_available(),
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "actors": actors,
        "images": {"total": total, **counts},
        "pack_ways": dict(sorted(pack_ways.items())),
        "stopped": stop_reason,
        "started_at": timestamp(t_start), "finished_at": timestamp(t_end), "wall_seconds": round(t_end - t_start, 3),
    }
    write_atomic(out / "run.json", json.dumps(info, indent=2).encode())
