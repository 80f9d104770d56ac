"""Fitted networks on disk as safetensors: plain tensors plus the settings, nothing to unpickle."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..config import FitConfig
from .images import write_atomic
from ..engine.model import ZSSRNet


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], cfg: FitConfig,
                 channels: int) -> None:
    meta = {"config": json.dumps(cfg.to_dict()), "channels": str(channels), "format": "zssr-batch/1"}
    write_atomic(path, save({k: v.contiguous() for k, v in state_dict.items()}, metadata=meta))


def load_weights(path: str | os.PathLike) -> tuple[ZSSRNet, FitConfig]:
    """Rebuild the fitted network and the settings it was fitted with."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != "zssr-batch/1":
        raise ValueError(f"{path}: not a zssr-batch weights file")
    raw = json.loads(meta["config"])
    raw["scale"] = tuple(raw["scale"])
    raw["scale_steps"] = tuple(tuple(s) for s in raw["scale_steps"])
    raw["back_projection_iters"] = tuple(raw["back_projection_iters"])
    cfg = FitConfig(**raw)
    net = ZSSRNet(int(meta["channels"]), cfg.depth, cfg.width, cfg.init_variance)
    net.load_state_dict(tensors)
    return net, cfg
