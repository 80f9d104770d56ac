"""One image in, its ZSSR upscale out: fit through the scale steps, then infer.

No I/O and no Ray here: tensors in, tensors and a log out. In gradual mode each
step's output joins the pool of fathers for the next step, and the same network
(and optimizer) keeps training unless ``reinit_each_step`` is set, as in the
authors' ``ZSSR.run``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import FitConfig
from .fit import FitLog, PairHook, Trainer
from .infer import MemoryPlan, combine, ensemble_outputs
from .kernels import shift_kernel
from .model import ZSSRNet


@dataclass
class SRResult:
    output: torch.Tensor  # (C, H, W) in [0, 1], on the CPU
    log: FitLog
    fit_seconds: float
    infer_seconds: float
    state_dict: dict[str, torch.Tensor]
    variants: dict[str, torch.Tensor] = field(default_factory=dict)  # 'single', 'mean', 'median'
    started_at: float = 0.0  # time.time() when its fit began (in a pack: when a slot took it)

    @property
    def iterations(self) -> int:
        return self.log.iterations


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def upscale_with(net: ZSSRNet, img: torch.Tensor, cfg: FitConfig, step: int, kernel: torch.Tensor | None,
                 plan: MemoryPlan, want_variants: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The fitted net's final output for scale step ``step`` (and the single/mean/median variants if asked)."""
    net.eval()
    sf, bp = cfg.steps[step], cfg.bp_iters(step)
    outs = ensemble_outputs(net, img, sf, cfg.ensemble != "none", bp, kernel, plan)
    out = combine(outs, "mean" if cfg.ensemble == "mean" else "median", img, sf, bp, kernel)
    variants = {}
    if want_variants:
        variants = {"single": outs[0], "mean": combine(outs, "mean", img, sf, bp, kernel),
                    "median": combine(outs, "median", img, sf, bp, kernel)}
    return out, variants


def new_network(cfg: FitConfig, channels: int, gen: torch.Generator, device: torch.device) -> ZSSRNet:
    """A fresh network drawn from the image's own random stream (the first draws of that stream)."""
    net = ZSSRNet(channels, cfg.depth, cfg.width, cfg.init_variance, generator=gen)
    if cfg.max_iters == 0:  # untrained = no residual: the bicubic upscale, exactly
        torch.nn.init.zeros_(net.convs[-1].weight)
    return net.to(device)


def super_resolve(image: torch.Tensor, cfg: FitConfig, device: torch.device | str = "cpu",
                  kernel: np.ndarray | None = None, pair_hook: PairHook | None = None,
                  want_variants: bool = False, plan: MemoryPlan = MemoryPlan(),
                  pairs_on_host: bool = False) -> SRResult:
    """Fit a ZSSR network on ``image`` (C, h, w) in [0, 1] and upscale it by ``cfg.scale``.

    ``pairs_on_host``: make the training pairs on the CPU each step, as ports do (a benchmark's baseline).
    """
    if image.dim() != 3 or image.shape[0] < 1:
        raise ValueError(f"super_resolve expects an image (C, H, W), got shape {tuple(image.shape)}")
    device = torch.device(device)
    started_at = time.time()
    gen = torch.Generator().manual_seed(cfg.seed)
    img = image.to(device=device, dtype=torch.float32)
    channels = img.shape[0]

    log = FitLog()
    net = new_network(cfg, channels, gen, device)
    trainer = Trainer(net, cfg, gen, log, pair_hook, plan, pairs_on_host)
    steps = cfg.steps
    base_scales = [(1.0, 1.0)] + list(steps)
    sources = [img]
    fit_s = infer_s = 0.0
    out = img
    for i, sf in enumerate(steps):
        step_kernel = None
        if kernel is not None:
            step_kernel = torch.as_tensor(shift_kernel(kernel, sf), dtype=torch.float32, device=device)
        if i > 0 and cfg.reinit_each_step:
            net = new_network(cfg, channels, gen, device)
            trainer = Trainer(net, cfg, gen, log, pair_hook, plan, pairs_on_host)
        t0 = time.perf_counter()
        trainer.train(img, sources, base_scales, sf, step_kernel, scale_step=i)
        _sync(device)
        t1 = time.perf_counter()
        out, variants = upscale_with(net, img, cfg, i, step_kernel, plan, want_variants and i == len(steps) - 1)
        _sync(device)
        fit_s += t1 - t0
        infer_s += time.perf_counter() - t1
        sources.append(out)
    state = {name: t.detach().cpu().clone() for name, t in net.state_dict().items()}
    return SRResult(out.cpu(), log, fit_s, infer_s, state, {n: v.cpu() for n, v in variants.items()}, started_at)
