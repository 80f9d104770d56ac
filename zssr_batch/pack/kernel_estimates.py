"""Many images' downscaling kernels estimated at once on one device: K KernelGANs
(``engine.kernel_estimate``) packed into grouped convolutions, with continuous batching.

Slot i holds image i's estimator: its generator's and discriminator's weights (a row of ``g``
and of ``d``), their spectral-norm vectors, their Adam states and learning rate, its schedule,
its crops and its noise stream, all started as ``engine.kernel_estimate.start`` starts them
alone, so each image gets the kernel ``estimate_x2`` finds for it alone (the tests check it to
float tolerance). One step runs the K composite kernels, the K generators' outputs and the K
discriminators as grouped convolutions (batch norm is per channel, so per slot); the losses are
per slot and summed, so no slot's gradient reaches another's weights. When an image's steps are
done its kernel goes out and the slot takes the next image, as the fit pack does
(``pack.loop``); a draining pack drops its empty slots.

A slot between images keeps its last image and weights and rides along masked: its Adam rows do
not move, and its numbers stay finite. Images that cannot share the pack's shapes (another
channel count, a crop shrunk for a small image) are estimated alone, in turn.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import tally
from ..engine.kernel_estimate import (BETAS, BOUNDARIES, CENTRE, K_SIZE, LEARNING_RATE, SUM2ONE, Schedule,
                                      Start, bicubic_target, estimate_x2, output_side, post_process, rim_mask,
                                      start)
from .nets import PackedAdam


@dataclass
class EstimateJob:
    key: Any  # the caller's handle on the image
    image: torch.Tensor  # (C, h, w) in [0, 1], a side of at least 32 pixels (``kernel_estimate.too_small``)
    steps: int
    seed: int


Estimated = tuple[Any, np.ndarray, float]  # (key, its x2 kernel post-processed, its seconds in the pack)


def _trained(module: nn.Module) -> list[torch.Tensor]:
    """A generator's or discriminator's trained tensors in the pack's row order (spectral norm's
    ``weight_orig``, the weight it normalises, where it has one)."""
    out: list[torch.Tensor] = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out += [getattr(m, "weight_orig", m.weight)] + ([m.bias] if m.bias is not None else [])
        elif isinstance(m, nn.BatchNorm2d):
            out += [m.weight, m.bias]
    return out if out else list(module.parameters())  # the generator: its bare weights


def _row(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _views(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """(K, *shape) views of ``flat``'s rows, one per tensor of the row layout."""
    out, at = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[:, at:at + n].view(flat.shape[0], *shape))
        at += n
    return out


class EstimatorPack:
    """The device side: K estimators' weights, spectral-norm vectors, Adam states and images."""

    def __init__(self, k: int, first: Start, device: torch.device) -> None:
        self.device = device
        self.g_shapes = [tuple(t.shape) for t in _trained(first.G)]
        self.d_shapes = [tuple(t.shape) for t in _trained(first.D)]
        # The discriminator's layers in order, and its batch norms' eps (the module's own)
        self.layers = [type(m).__name__ for m in first.D.net]
        self.bn_eps = next(m.eps for m in first.D.net if isinstance(m, nn.BatchNorm2d))
        convs = [m for m in first.D.net if isinstance(m, nn.Conv2d)]
        # Every row starts as the first image's estimator: a slot never filled rides along finite
        self.g = _row(_trained(first.G)).to(device).repeat(k, 1).requires_grad_(True)
        self.d = _row(_trained(first.D)).to(device).repeat(k, 1).requires_grad_(True)
        self.u = [c.weight_u.detach().to(device).repeat(k, 1) for c in convs]
        self.v = [c.weight_v.detach().to(device).repeat(k, 1) for c in convs]
        self.adam_g, self.adam_d = PackedAdam(self.g, BETAS), PackedAdam(self.d, BETAS)
        self.rate = torch.full((k,), LEARNING_RATE, dtype=torch.float64, device=device)
        self.active = torch.zeros(k, dtype=torch.bool, device=device)
        self.images: list[torch.Tensor] = [first.g_crops.image] * k  # each slot's image (on the device)
        dtype = self.g.dtype
        self.mask = rim_mask().to(device, dtype)
        self.idx = torch.arange(K_SIZE, device=device, dtype=dtype)

    @property
    def k(self) -> int:
        return self.g.shape[0]

    def place(self, slot: int, s: Start) -> None:
        """Slot ``slot`` takes the estimator ``s``, as it starts."""
        with torch.no_grad():
            self.g[slot] = _row(_trained(s.G)).to(self.device)
            self.d[slot] = _row(_trained(s.D)).to(self.device)
            convs = [m for m in s.D.net if isinstance(m, nn.Conv2d)]
            for j, c in enumerate(convs):
                self.u[j][slot] = c.weight_u.to(self.device)
                self.v[j][slot] = c.weight_v.to(self.device)
        self.adam_g.reset(slot)
        self.adam_d.reset(slot)
        self.rate[slot] = LEARNING_RATE
        self.active[slot] = True
        self.images[slot] = s.g_crops.image

    def keep(self, slots: list[int]) -> None:
        """A draining pack: only ``slots`` from here on, in that order."""
        idx = torch.tensor(slots, device=self.device)
        self.g = self.g.detach().index_select(0, idx).requires_grad_(True)
        self.d = self.d.detach().index_select(0, idx).requires_grad_(True)
        self.adam_g, self.adam_d = self.adam_g.keep(idx, self.g), self.adam_d.keep(idx, self.d)
        self.u = [u.index_select(0, idx) for u in self.u]
        self.v = [v.index_select(0, idx) for v in self.v]
        self.rate, self.active = self.rate.index_select(0, idx), self.active.index_select(0, idx)
        self.images = [self.images[i] for i in slots]

    def kernels(self, g: torch.Tensor) -> torch.Tensor:
        """(K, 13, 13): each slot's composite kernel (``DeepLinearKernel.forward``, grouped by slot)."""
        ws, k = _views(g, self.g_shapes), g.shape[0]
        x = torch.ones(1, k, 1, 1, device=g.device, dtype=g.dtype)
        for n, w in enumerate(ws):
            x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), padding=K_SIZE - 1 if n == 0 else 0, groups=k)
        return x[0].flip(-2, -1)

    @staticmethod
    def shrink(kernels: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """(K, C, n, n) crops, each channel through its slot's kernel, every other pixel kept: (1, K*C, m, m)."""
        k, c, n, _ = crops.shape
        w = kernels.repeat_interleave(c, 0)[:, None]
        return F.conv2d(crops.reshape(1, k * c, n, n), w, stride=2, groups=k * c)

    def _sigma(self, j: int, w: torch.Tensor) -> torch.Tensor:
        """Spectral norm of layer ``j``'s (K, out, in, h, w) weights: one power iteration per call,
        its vectors kept, as ``torch.nn.utils.spectral_norm`` does in training."""
        k, out = w.shape[:2]
        wm = w.reshape(k, out, -1)
        with torch.no_grad():
            v = F.normalize(torch.bmm(wm.transpose(1, 2), self.u[j][..., None])[..., 0], dim=1, eps=1e-12)
            u = F.normalize(torch.bmm(wm, v[..., None])[..., 0], dim=1, eps=1e-12)
            self.u[j], self.v[j] = u, v
        return (u * torch.bmm(wm, v[..., None])[..., 0]).sum(1).view(k, 1, 1, 1, 1)

    def discriminate(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """(1, K*C, s, s) inputs through each slot's discriminator (rows ``d``): (K, s - 6, s - 6)."""
        tensors, k, j = iter(_views(d, self.d_shapes)), d.shape[0], 0
        for layer in self.layers:
            if layer == "Conv2d":
                w, b = next(tensors), next(tensors)
                w = w / self._sigma(j, w)
                j += 1
                x = F.conv2d(x, w.reshape(-1, *w.shape[2:]), b.reshape(-1), groups=k)
            elif layer == "BatchNorm2d":
                w, b = next(tensors), next(tensors)
                x = F.batch_norm(x, None, None, w.reshape(-1), b.reshape(-1), training=True, eps=self.bn_eps)
            elif layer == "ReLU":
                x = torch.relu(x)
            elif layer == "Sigmoid":
                x = torch.sigmoid(x)
            else:
                raise ValueError(f"the packed discriminator has no {layer} layer")
        return x[0]

    def step(self, g_in: torch.Tensor, real: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One step of every slot (``kernel_estimate._train``'s, slot-wise): ``g_in`` (K, C, n, n) the
        generators' crops, ``real`` (1, K*C, s, s) the discriminators' noisy real crops, ``noise``
        (1, K*C, s, s) the noise on the generators' outputs, ``weights`` (3, K) the bicubic, centre and
        sparsity losses' weights. Returns each slot's bicubic loss (K,)."""
        k, c, n, _ = g_in.shape
        live = self.active.to(g_in.dtype)
        kern = self.kernels(self.g)
        out = self.shrink(kern, g_in)
        d_fake = self.discriminate(out, self.d.detach())
        target = bicubic_target(g_in.reshape(k * c, 1, n, n), out.shape[-1]).reshape(out.shape)
        bicubic = (out - target).square().reshape(k, -1).mean(1)
        total = kern.sum((1, 2))
        com = torch.stack(((kern.sum(2) * self.idx).sum(1) / total, (kern.sum(1) * self.idx).sum(1) / total), 1)
        loss = ((d_fake - 1).abs().mean((1, 2)) + weights[0] * bicubic + SUM2ONE * (1 - total).abs()
                + BOUNDARIES * (kern * self.mask).abs().mean((1, 2)) + weights[1] * (com - CENTRE).square().mean(1)
                + weights[2] * (kern.abs() + 1e-12).pow(0.2).mean((1, 2)))
        (grad,) = torch.autograd.grad((loss * live).sum(), self.g)
        self.adam_g.step([grad], self.rate, self.active)
        with torch.no_grad():
            out = self.shrink(self.kernels(self.g), g_in) + noise
        d_real, d_fake = self.discriminate(real, self.d), self.discriminate(out, self.d)
        loss_d = 0.5 * (d_fake.abs().mean((1, 2)) + (d_real - 1).abs().mean((1, 2)))
        (grad,) = torch.autograd.grad((loss_d * live).sum(), self.d)
        self.adam_d.step([grad], self.rate, self.active)
        return bicubic.detach()

    def kernel(self, slot: int) -> np.ndarray:
        with torch.no_grad():
            return self.kernels(self.g[slot:slot + 1])[0].double().cpu().numpy()


@dataclass
class _Slot:
    job: EstimateJob
    start: Start
    sched: Schedule
    started: float  # perf_counter() when the slot took it
    it: int = 0  # its steps taken


def _signature(s: Start) -> tuple[int, int]:
    return s.g_crops.image.shape[0], s.crop


class EstimateRun:
    """One pack's loop over a source of jobs, K slots at a time; iterate it for ``Estimated``
    triples as each image's steps end (``estimate_packed`` says what goes in and comes out)."""

    def __init__(self, jobs: Iterable[EstimateJob | None], k: int, device: torch.device,
                 stop: Callable[[], bool] | None, dtype: torch.dtype = torch.float32) -> None:
        self.pending, self.k, self.device, self.stop, self.dtype = iter(jobs), k, device, stop, dtype
        self.pack: EstimatorPack | None = None
        self.sig: tuple[int, int] | None = None
        self.slots: list[_Slot | None] = [None] * k
        self.exhausted = self.dry = False

    def __iter__(self) -> Iterator[Estimated]:
        while not (self.stop is not None and self.stop()):
            self.dry = False
            for i in range(len(self.slots)):
                if self.slots[i] is None and not self.exhausted and not self.dry:
                    yield from self.fill(i)
            live = [i for i, s in enumerate(self.slots) if s is not None]
            if not live:
                if self.exhausted:
                    return
                time.sleep(0.002)  # the source has no image decoded yet
                continue
            if self.exhausted and len(live) <= len(self.slots) // 2:
                assert self.pack is not None
                self.pack.keep(live)
                self.slots = [self.slots[i] for i in live]
                live = list(range(len(live)))
            yield from self.train(live)

    def fill(self, slot: int) -> Iterator[Estimated]:
        """Put the next job that shares the pack's shapes into ``slot``; others are estimated alone."""
        while not self.exhausted and not self.dry:
            try:
                job = next(self.pending)
            except StopIteration:
                self.exhausted = True
                return
            if job is None:
                self.dry = True
                return
            s = start(job.image.to(self.device), job.seed, self.dtype)  # its crops are cut on the device
            if self.sig is not None and _signature(s) != self.sig:
                t0 = time.perf_counter()
                yield job.key, estimate_x2(job.image, job.steps, job.seed, self.device, self.dtype), time.perf_counter() - t0
                continue
            if self.pack is None:
                self.sig, self.pack = _signature(s), EstimatorPack(self.k, s, self.device)
            self.pack.place(slot, s)
            self.slots[slot] = _Slot(job, s, Schedule(job.steps), time.perf_counter())
            return

    def _inputs(self, live: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each live slot's crops and noise, drawn from its own streams in the order alone draws them
        (the generator's crop, the real crop, its noise, the output's noise); an idle slot's first crop."""
        pack = self.pack
        assert pack is not None and self.sig is not None
        c, n = self.sig
        m = output_side(n)
        g_in, real = [], []
        dt = self.dtype
        noise_real, noise_out = torch.zeros(pack.k, c, m, m, dtype=dt), torch.zeros(pack.k, c, m, m, dtype=dt)
        weights = torch.zeros(3, pack.k, dtype=dt)
        for i, s in enumerate(self.slots):
            if s is None:
                g_in.append(pack.images[i][:, :n, :n])
                real.append(pack.images[i][:, :m, :m])
                continue
            g_in.append(s.start.g_crops())
            real.append(s.start.d_crops())
            noise_real[i] = torch.randn((c, m, m), generator=s.start.noise, dtype=dt) * (2 / 255)  # 1/255 on [0, 1]
            noise_out[i] = torch.randn((c, m, m), generator=s.start.noise, dtype=dt) * (1 / 255)
            weights[:, i] = torch.tensor([s.sched.bicubic, s.sched.centre, s.sched.sparse])
        dev = self.device
        real_t = torch.stack(real) + noise_real.to(dev)
        return (torch.stack(g_in), real_t.reshape(1, -1, m, m), noise_out.to(dev).reshape(1, -1, m, m),
                weights.to(dev))

    def train(self, live: list[int]) -> Iterator[Estimated]:
        """One step of the pack, then each live slot's schedule; a slot whose steps are done hands its kernel out."""
        pack = self.pack
        assert pack is not None
        bicubic = pack.step(*self._inputs(live)).tolist()
        tally.add_estimated(len(live))
        for i in live:
            s = self.slots[i]
            assert s is not None
            rate = s.sched.rate
            s.sched.after(s.it, bicubic[i])
            if s.sched.rate != rate:
                pack.rate[i] = s.sched.rate
            s.it += 1
            if s.it >= s.job.steps:
                pack.active[i] = False
                self.slots[i] = None
                yield s.job.key, post_process(pack.kernel(i)), time.perf_counter() - s.started


def estimate_packed(jobs: Iterable[EstimateJob | None], k: int, device: torch.device | str = "cpu",
                    stop: Callable[[], bool] | None = None,
                    dtype: torch.dtype = torch.float32) -> Iterator[Estimated]:
    """Estimate every job's x2 kernel, K at a time in one pack; yields (key, kernel, seconds) as each
    one's steps end (``seconds``: its wall time in the pack, which K images shared).

    ``jobs`` may yield None: no job ready yet. The pack then trains the slots it has and offers the
    empty ones a job again at the next step; with no slot live it waits. ``stop``, checked every
    step, abandons the pack when it returns True. ``dtype``: as ``kernel_estimate.start``'s."""
    yield from EstimateRun(jobs, max(1, k), torch.device(device), stop, dtype)
