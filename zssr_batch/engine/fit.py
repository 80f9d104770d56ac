"""The per-image training loop: L1 loss, Adam, and the authors' learning-rate rule.

Every ``test_every`` steps the network reconstructs the image from its own
downscaled copy and the error is recorded. Every ``lr_check_every`` steps (once
``min_iters`` steps have passed since the last change) a line is fitted to the
last ``lr_slope_range / test_every`` records; if the error is no longer falling
clearly (``-ratio * slope < std(slope)``) the rate drops tenfold, and the fit
stops once it is below ``min_learning_rate``. The article's fixed halving
schedule is the alternative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import FitConfig, Scale
from .infer import MemoryPlan, network_upscale
from .model import ZSSRNet
from .pairs import Augment, Draw, make_son, noisy_son, sample_father, son_noise, son_shape
from .resize import imresize
from . import tally

PairHook = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class FitLog:
    """What a fit did, step by step, for curves and reports (steps count across scale steps)."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    scale_step: list[int] = field(default_factory=list)
    test_steps: list[int] = field(default_factory=list)
    rec_mse: list[float] = field(default_factory=list)
    lr_changes: list[int] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.loss)


def legacy_slope_std(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope of the least-squares line and its standard deviation, as the authors' numpy gave it.

    ``np.polyfit(..., cov=True)`` before numpy 1.16 scaled the covariance by
    ``residuals / (n - 4)``; today's uses ``n - 2``. The rule was tuned on the
    former, so we keep it (3x the variance at n = 5). Below 5 points we fall
    back to ``n - 2`` rather than divide by zero.
    """
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = len(x)
    if n < 3:
        return 0.0, math.inf
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    resid = float(((y - (ym + slope * (x - xm))) ** 2).sum())
    dof = n - 4 if n > 4 else n - 2
    return slope, math.sqrt(resid / dof / sxx)


def reconstruction_noise(shape: Sequence[int], sf: Scale, noise_std: float,
                         gen: torch.Generator) -> torch.Tensor | None:
    """The noise of the son of a test of an image of ``shape`` (C, h, w), drawn now from the image's
    stream: at the test's turn in it, even when the test itself runs later (a pack runs its tests
    beside the training)."""
    return son_noise(son_shape(shape, sf), noise_std, gen)


def reconstruction_error(net: ZSSRNet, image: torch.Tensor, sf: Scale, kernel: torch.Tensor | None,
                         noise: torch.Tensor | None, plan: MemoryPlan = MemoryPlan()) -> torch.Tensor:
    """How well the net restores the image from its own downscaled copy (with ``noise``, from
    ``reconstruction_noise``): the rule's signal, as a 0-d tensor on the image's device, so that a
    packed fit reads it back later without stalling the GPU."""
    with torch.no_grad():
        son = noisy_son(image, sf, kernel, noise)
        rec = network_upscale(net, son[None], sf, image.shape[-2:], plan)[0]
        return ((image - rec) ** 2).mean()


def reconstruction_mse(net: ZSSRNet, image: torch.Tensor, sf: Scale, kernel: torch.Tensor | None, noise_std: float,
                       gen: torch.Generator, plan: MemoryPlan = MemoryPlan()) -> float:
    noise = reconstruction_noise(image.shape, sf, noise_std, gen)
    return float(reconstruction_error(net, image, sf, kernel, noise, plan))


def augment_of(cfg: FitConfig) -> Augment:
    return Augment(cfg.crop, cfg.p_as_is, cfg.p_no_interp, cfg.augment_min_scale, cfg.augment_max_scale,
                   cfg.scale_diff_sigma, cfg.shear_sigma, cfg.rotation)


class Schedule:
    """One image's learning rate through one scale step: the authors' rule, or the article's halving."""

    def __init__(self, cfg: FitConfig) -> None:
        self.cfg = cfg
        self.lr = cfg.learning_rate
        self.changes = [0]
        self.tests: list[int] = []
        self.rec: list[float] = []
        self.n_fit = max(1, cfg.lr_slope_range // cfg.test_every)
        self.drop_every = max(1, math.ceil(cfg.max_iters / cfg.lr_halvings))
        self.diverged = False  # a test's error came back NaN or inf: the network is lost, training stops

    def rate(self, it: int) -> float:
        """The learning rate of step ``it``."""
        if self.cfg.lr_schedule == "halving":
            self.lr = self.cfg.learning_rate * 0.5 ** math.floor((1 + it) / self.drop_every)
        return self.lr

    def wants_test(self, it: int) -> bool:
        return self.cfg.lr_schedule == "zssr" and it % self.cfg.test_every == 0

    def add_test(self, it: int, rec_mse: float) -> None:
        self.tests.append(it)
        self.rec.append(rec_mse)
        # The authors' rule never cuts on a NaN slope, so a diverged fit would train on to max_iters
        # (in a pack, holding its slot): stop it at once; its output is refused downstream.
        self.diverged = self.diverged or not math.isfinite(rec_mse)

    def check_due(self, it: int) -> bool:
        """Whether the rule looks at the tests after step ``it`` (the only time it needs their values)."""
        cfg = self.cfg
        return cfg.lr_schedule == "zssr" and (1 + it) % cfg.lr_check_every == 0 and it - self.changes[-1] > cfg.min_iters

    def after_step(self, it: int) -> bool:
        """Apply the rule after step ``it``; True when the rate was cut."""
        if self.check_due(it):
            slope, std = legacy_slope_std(self.tests[-self.n_fit:], self.rec[-self.n_fit:])
            if -self.cfg.lr_change_ratio * slope < std:
                self.lr /= 10
                self.changes.append(it)
                return True
        return False

    @property
    def finished(self) -> bool:
        return self.diverged or (self.cfg.lr_schedule == "zssr" and self.lr < self.cfg.min_learning_rate)


class Trainer:
    """Trains one network on one image through one or more scale steps."""

    def __init__(self, net: ZSSRNet, cfg: FitConfig, gen: torch.Generator, log: FitLog,
                 pair_hook: PairHook | None = None, plan: MemoryPlan = MemoryPlan(),
                 pairs_on_host: bool = False) -> None:
        self.net, self.cfg, self.gen, self.log, self.plan = net, cfg, gen, log, plan
        # Make each step's pair (father, son, interpolated son) on the CPU and copy it to the device,
        # as ports of the authors' code do; only throughput.py's baseline wants it (issue 6 defines
        # the baseline that way). The random draws are the same either way.
        self.pairs_on_host = pairs_on_host
        self.draw = Draw(gen)
        self.pair_hook = pair_hook
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        self.aug = augment_of(cfg)

    def reconstruction_mse(self, image: torch.Tensor, sf: Scale, kernel: torch.Tensor | None) -> float:
        return reconstruction_mse(self.net, image, sf, kernel, self.cfg.noise_std, self.gen, self.plan)

    def train(self, image: torch.Tensor, sources: list[torch.Tensor], base_scales: Sequence[Scale], sf: Scale,
              kernel: torch.Tensor | None, scale_step: int = 0) -> None:
        cfg, log = self.cfg, self.log
        sched = Schedule(cfg)
        losses = []  # device scalars: no host sync per step
        device = image.device
        pair_sources, pair_kernel = sources, kernel
        if self.pairs_on_host:
            pair_sources = [s.cpu() for s in sources]
            pair_kernel = kernel.cpu() if kernel is not None else None
        self.net.train()
        for it in range(cfg.max_iters):
            lr = sched.rate(it)
            for group in self.opt.param_groups:
                group["lr"] = lr
            father = sample_father(pair_sources, base_scales, self.aug, self.draw)
            son = make_son(father, sf, pair_kernel, cfg.noise_std, self.gen)
            x = imresize(son, sf, father.shape[-2:])
            if self.pairs_on_host:
                father, son, x = father.to(device), son.to(device), x.to(device)
            if self.pair_hook is not None:
                self.pair_hook(log.iterations + it, father, son)
            out = self.net(x[None])
            loss = (out - father[None]).abs().mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            tally.add(1)
            losses.append(loss.detach())
            log.lr.append(lr)
            log.scale_step.append(scale_step)
            step = log.iterations + it  # counted across scale steps
            if sched.wants_test(it):
                sched.add_test(it, self.reconstruction_mse(image, sf, kernel))
                log.test_steps.append(step)
                log.rec_mse.append(sched.rec[-1])
            if sched.after_step(it):
                log.lr_changes.append(step)
            if sched.finished:
                break
        log.loss.extend(torch.stack(losses).cpu().tolist() if losses else [])
