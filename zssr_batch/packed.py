"""Many ZSSR fits at once on one device: K networks packed into grouped convolutions.

A fit trains a tiny network on 128x128 crops, which leaves a GPU waiting on
kernel launches. Here slot k of a pack holds image k's network (its slice of
every layer's weights), its own Adam state and step count, its own learning-rate
schedule and its own random stream, so each image is fitted exactly as it would
be alone (tests check the weights agree to float tolerance). One training step
runs all K networks as one grouped convolution on a (1, K*C, H, W) batch; the
loss is the sum of the per-image L1 means, so no image's gradient touches
another's weights. When an image's schedule ends, its output is made and the
slot takes the next image (continuous batching): stragglers never hold a pack.

Images that cannot share a pack (gradual scale steps, ``max_iters`` 0, another
channel count, network shape or crop) are fitted on their own by ``engine``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import FitConfig
from .engine import SRResult, _sync, super_resolve, upscale_with
from .fit import FitLog, Schedule, augment_of, reconstruction_mse
from .infer import MemoryPlan
from .kernels import shift_kernel
from .model import ZSSRNet
from .pairs import Augment, Draw, make_son, sample_father
from .resize import imresize


def auto_pack_size(cfg: FitConfig, device: torch.device | str) -> int:
    """How many fits to pack: on a GPU, what half its free memory holds; on a CPU, 4 (measured, see BENCHMARKS)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    # forward activations kept for backward (~depth x width x crop^2 floats), gradients, pair buffers: ~3x
    per_slot = 3 * cfg.depth * cfg.width * cfg.crop**2 * 4
    return int(max(1, min(128, (free // 2) // per_slot)))


@dataclass
class Job:
    key: Any  # the caller's handle on the image (e.g. its work item)
    image: torch.Tensor  # (C, h, w) in [0, 1]
    cfg: FitConfig
    kernel: np.ndarray | None = None


def signature(job: Job) -> tuple | None:
    """What must match for two jobs to share a pack; None for jobs that are fitted alone."""
    cfg, (c, h, w) = job.cfg, job.image.shape
    if cfg.scale_steps and len(cfg.steps) > 1 or cfg.max_iters == 0 or min(h, w) < cfg.crop:
        return None
    return (c, cfg.depth, cfg.width, cfg.crop)


class PackedNets(nn.Module):
    """K ZSSR networks; layer weights (K, out, in, 3, 3), run as one grouped convolution."""

    def __init__(self, k: int, channels: int, depth: int, width: int) -> None:
        super().__init__()
        sizes = [channels] + [width] * (depth - 1) + [channels]
        self.k, self.channels = k, channels
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(k, cout, cin, 3, 3)) for cin, cout in zip(sizes[:-1], sizes[1:]))

    def init_slot(self, slot: int, init_variance: float, gen: torch.Generator) -> None:
        """Draw slot's weights exactly as ``ZSSRNet`` draws them from the same generator."""
        with torch.no_grad():
            for w in self.weights:
                fan_in = w.shape[2] * 9
                fresh = torch.empty(w.shape[1:]).normal_(0.0, math.sqrt(init_variance / fan_in), generator=gen)
                w[slot].copy_(fresh)

    def forward(self, x: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (N, C, H, W), row n the input of slot ``slots[n]`` (default: all K slots) -> (N, C, H, W).

        Only the listed slots are computed: a pack that is draining costs only what is left in it.
        """
        k, c, h, w = x.shape
        y = x.reshape(1, k * c, h, w)
        for i, wt in enumerate(self.weights):
            if slots is not None:
                wt = wt.index_select(0, slots)
            y = F.conv2d(y, wt.reshape(-1, *wt.shape[2:]), padding=1, groups=k)
            if i < len(self.weights) - 1:
                y = torch.relu(y)
        return x + y.reshape(k, c, h, w)

    def slot_net(self, slot: int) -> ZSSRNet:
        net = ZSSRNet(self.channels, len(self.weights), self.weights[0].shape[1], 0.1)
        with torch.no_grad():
            for conv, w in zip(net.convs, self.weights):
                conv.weight.copy_(w[slot])
        return net.to(self.weights[0].device)


class PackedAdam:
    """Adam with a step count and a learning rate per slot (torch's Adam, applied slot-wise)."""

    def __init__(self, params: list[nn.Parameter], k: int, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.betas, self.eps = params, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(k, dtype=torch.float64)

    def reset(self, slot: int) -> None:
        for m, v in zip(self.m, self.v):
            m[slot].zero_()
            v[slot].zero_()
        self.t[slot] = 0

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """``lr``: (K,) float64 rates; ``active``: (K,) bool, the slots that took this step."""
        b1, b2 = self.betas
        self.t += active.double()
        t = self.t.clamp(min=1)
        step_size = torch.where(active, lr / (1 - b1 ** t), torch.zeros_like(lr))
        bc2_sqrt = (1 - b2 ** t).sqrt()
        dev = self.params[0].device
        for p, m, v in zip(self.params, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad
            keep = active.to(dev).view(shape)
            m.copy_(torch.where(keep, m.lerp(g, 1 - b1), m))
            v.copy_(torch.where(keep, v * b2 + (1 - b2) * g * g, v))
            denom = v.sqrt() / bc2_sqrt.to(dev, p.dtype).view(shape) + self.eps
            p.sub_(step_size.to(dev, p.dtype).view(shape) * m / denom)


@dataclass
class _Slot:
    job: Job
    image: torch.Tensor  # on the device
    gen: torch.Generator
    draw: Draw
    sched: Schedule
    aug: Augment
    kernel: torch.Tensor | None
    it: int = 0
    losses: list = field(default_factory=list)
    log: FitLog = field(default_factory=FitLog)
    started: float = 0.0


def fit_packed(jobs: Iterable[Job], k: int, device: torch.device | str = "cpu",
               plan: MemoryPlan = MemoryPlan()) -> Iterator[tuple[Any, SRResult]]:
    """Fit every job, K at a time in one pack; yields (key, result) as each image finishes."""
    device = torch.device(device)
    pending = iter(jobs)
    nets: PackedNets | None = None
    opt: PackedAdam | None = None
    sig = None
    slots: list[_Slot | None] = [None] * k
    exhausted = False

    def fill(slot: int) -> Iterator[tuple[Any, SRResult]]:
        """Put the next packable job into ``slot``; jobs that cannot share the pack are fitted alone."""
        nonlocal nets, opt, sig, exhausted
        while not exhausted:
            try:
                job = next(pending)
            except StopIteration:
                exhausted = True
                return
            s = signature(job)
            if s is None or (sig is not None and s != sig):
                yield job.key, super_resolve(job.image, job.cfg, device, job.kernel, plan=plan)
                continue
            if nets is None:
                sig = s
                nets = PackedNets(k, *s[:3]).to(device)
                opt = PackedAdam(list(nets.weights), k)
            gen = torch.Generator().manual_seed(job.cfg.seed)
            nets.init_slot(slot, job.cfg.init_variance, gen)
            opt.reset(slot)
            kern = None
            if job.kernel is not None:
                kern = torch.as_tensor(shift_kernel(job.kernel, job.cfg.scale), dtype=torch.float32, device=device)
            slots[slot] = _Slot(job, job.image.to(device, torch.float32), gen, Draw(gen), Schedule(job.cfg), augment_of(job.cfg), kern,
                                started=time.perf_counter())
            return

    for i in range(k):
        yield from fill(i)
    while any(s is not None for s in slots):
        assert nets is not None and opt is not None
        c, crop = sig[0], sig[3]
        live = [i for i, s in enumerate(slots) if s is not None]
        x = torch.zeros(len(live), c, crop, crop, device=device)
        target = torch.zeros_like(x)
        lr = torch.zeros(k, dtype=torch.float64)
        active = torch.zeros(k, dtype=torch.bool)
        for row, i in enumerate(live):
            s = slots[i]
            cfg = s.job.cfg
            lr[i] = s.sched.rate(s.it)
            father = sample_father([s.image], [(1.0, 1.0), cfg.scale], s.aug, s.draw)
            son = make_son(father, cfg.scale, s.kernel, cfg.noise_std, s.gen)
            x[row] = imresize(son, cfg.scale, father.shape[-2:])
            target[row] = father
            active[i] = True
        index = None if len(live) == k else torch.tensor(live, device=device)
        rows = (nets(x, index) - target).abs().mean(dim=(1, 2, 3))  # each image's own L1 mean
        per_image = torch.zeros(k, device=device, dtype=rows.dtype).index_put((torch.tensor(live, device=device),),
                                                                             rows)
        loss = rows.sum()
        for w in nets.weights:
            w.grad = None
        loss.backward()
        for w in nets.weights:  # slots that sat out have no gradient at all
            if w.grad is None:
                w.grad = torch.zeros_like(w)
        opt.step(lr, active)
        per_image = per_image.detach()
        for i, s in enumerate(slots):
            if s is None:
                continue
            cfg = s.job.cfg
            s.losses.append(per_image[i])
            s.log.lr.append(float(lr[i]))
            s.log.scale_step.append(0)
            if s.sched.wants_test(s.it):
                net = nets.slot_net(i)
                s.sched.add_test(s.it, reconstruction_mse(net, s.image, cfg.scale, s.kernel, cfg.noise_std, s.gen,
                                                          plan))
                s.log.test_steps.append(s.it)
                s.log.rec_mse.append(s.sched.rec[-1])
            if s.sched.after_step(s.it):
                s.log.lr_changes.append(s.it)
            s.it += 1
            if s.sched.finished or s.it >= cfg.max_iters:
                yield s.job.key, _finish(nets.slot_net(i), s, plan, device)
                slots[i] = None
                yield from fill(i)


def _finish(net: ZSSRNet, s: _Slot, plan: MemoryPlan, device: torch.device) -> SRResult:
    _sync(device)
    t1 = time.perf_counter()
    s.log.loss.extend(torch.stack(s.losses).cpu().tolist())
    out, _ = upscale_with(net, s.image, s.job.cfg, 0, s.kernel, plan)
    _sync(device)
    state = {n: t.detach().cpu().clone() for n, t in net.state_dict().items()}
    # fit time is the slot's wall time: K images shared it, as they share the GPU
    return SRResult(out.cpu(), s.log, t1 - s.started, time.perf_counter() - t1, state)
