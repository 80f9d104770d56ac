"""An image's own downscaling kernel, estimated from the image alone (KernelGAN: Bell-Kligler,
Shocher & Irani, "Blind Super-Resolution Kernel Estimation using an Internal-GAN", NeurIPS 2019),
for a ZSSR fit that then uses it as it uses a given kernel.

The idea: the kernel that shrinks the low-resolution image by 2 so that the result's patches are
distributed as the image's own patches is the image's super-resolution kernel (patches recur
across scales in natural images). A generator shrinks 64x64 crops of the image by 2; a fully
convolutional patch discriminator tells its outputs from crops of the image itself. The generator
is linear (six convolutions, no activations, 7-5-3-1-1-1 taps, 64 channels), so it *is* one 13x13
kernel followed by keeping every other pixel: that kernel is the estimate. A deep linear net
rather than 169 free taps, because it trains to far better kernels (the paper's ablation; a
3-parameter Gaussian generator measured worse here too, docs/BENCHMARKS.md).

Settings are the authors' (sefibk/KernelGAN: configs.py, networks.py, loss.py, learner.py,
data.py): Adam 2e-4, betas (0.5, 0.999), both nets; 3000 steps, rates /10 every 750; crops where
the image has edges (a map of its strongest 3 % gradients); discriminator with spectral norm, a
7x7 first layer, five 1x1 layers with batch norm, sigmoid, L1 against 0/1 labels; 1/255 noise on
its inputs. The generator's losses besides fooling it: sum to 1 (weight 0.5), nothing on the
2-pixel rim (0.5, a mask rising to 30 at the corners), close to bicubic downscaling at first (5,
then /100 every 200 steps once the match is close), and once that weight is below 5e-3 a centred
centre of mass (1) and sparsity (|k|^0.2, 5). x4 is two x2 steps (``kernels.analytic_kernel``).

What differs, and why:
- The generator's output is the image correlated with its composite kernel (computed each step
  from the weights, as their ``calc_curr_k``) and subsampled, instead of six convolutions over the
  64x64 crop: the same numbers and the same gradients (the net is linear), at ~1/40 of the work.
- A budget below 3000 steps compresses the schedule (every interval scaled by steps / 3000).
- The kernel keeps all its positive taps (``post_process``), not only its 40 largest.
- Both nets' crop centres come from the image's own gradient map, its magnitude term thresholded
  as its x and y terms are; the authors draw the generator's from the map of the image shrunk by
  2 and add the magnitude whole. Measured both ways: the same estimates within a draw's noise.
- An estimate narrower than ``trust_width`` (the ``real`` preset: 1.6 px), wider than its 13
  taps hold (``WIDEST``), or at x4 wider than any kernel of the blind recipe (``WIDEST_X4``), is
  not used: the fit assumes bicubic instead.
- ``restarts`` runs of the GAN an image (their own seeds) can stand for one: the failed runs
  dropped, the mean of the others kept (``combined``).
- The discriminator's input noise is drawn on the host, from the image's own stream: the same
  noise on any device, and in a pack (``pack.kernel_estimates``) each image's own.

Two runs of this GAN on the same image part ways within tens of steps in float32 (Adam divides
near-zero gradients by their own size; |k|^0.2 is steep near 0): a second thread, or another
pack size, gives another estimate of the same quality, not the same bits.

Tensors in, a kernel out: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ESTIMATORS
from . import tally
from .kernels import analytic_kernel, bicubic_kernel, kernel_moments

G_TAPS = (7, 5, 3, 1, 1, 1)  # the generator's layers (authors' G_structure)
G_CHANNELS = 64
K_SIZE = sum(t - 1 for t in G_TAPS) + 1  # 13: the composite kernel's side (x2)
CROP = 64  # the generator's input crop; its output (and the discriminator's input) is 26
D_CHANNELS, D_LAYERS, D_TAPS = 64, 7, 7
LEARNING_RATE, BETAS = 2e-4, (0.5, 0.999)
STEPS = 3000  # the authors' budget; their schedule below is in steps of it
RATE_EVERY, RATE_CUT = 750, 10.0
LAMBDA_EVERY, LAMBDA_DECAY, LAMBDA_MIN, CLOSE_TO_BICUBIC = 200, 100.0, 5e-6, 0.4
SUM2ONE, BOUNDARIES, BICUBIC, CENTRALIZED, SPARSE = 0.5, 0.5, 5.0, 1.0, 5.0
RIM_PENALTY = 30.0
EDGE_SHAVE = 10  # the authors shave 10 pixels off synthetic images: their borders are padding
MIN_SIDE = 32  # the crops shrink with a small image down to this side; below it, bicubic
# The widest x2 estimate kept (HR pixels, ``kernel_moments``): a Gaussian keeps 99 % of its mass
# within 2.58 std, so the 13 taps (6 a side) hold one of std 2.3 at most; an estimate wider than
# that pushes against its support and its rim penalty (a failed run of the GAN, not a kernel:
# BSD100 101085 came out 3.67 px wide where the truth is 1.80, and its fit lost 5 dB to bicubic).
# The recipe's widest x2 kernels (variances up to 2.5 x 2) are 2.24 px.
WIDEST = 2.5
# The widest x4 kernel kept (its width, as ``kernel_at`` makes it from the x2 estimate): the blind
# recipe's widest x4 kernel is 3.14 px over 300 draws (x2: 2.23), and this is as far beyond it as
# ``WIDEST`` is at x2. The x2 estimates do not go below ~1.5 px (docs/BENCHMARKS.md), so their x4
# kernels came out 3.2-4.2 px where the truths were 1.4-2.7, and every one of those fits lost to
# assuming bicubic (by 1.84 dB on the benchmark's three): a kernel wider than the truth sharpens
# far more than a narrower one blurs.
WIDEST_X4 = 3.5
# The narrowest a kept estimate may be across (its smaller principal std, HR pixels): a GAN run that
# collapsed to a line or a point (at 60 steps a 48-pixel crop came out two taps two rows apart,
# 1e6 times longer than wide) is no kernel; the recipe's narrowest kernels are 0.59 px across.
NARROWEST_ACROSS = 0.3
# How far a kept estimate's centre of mass may sit from its middle tap (HR pixels): the centring
# loss holds good estimates within 0.6 of it; one run off to a corner failed (and the fit would
# only see its shape, ``kernels.shift_kernel`` moves it back).
OFF_CENTRE = 3.0


@dataclass(frozen=True)
class Estimate:
    kernel: np.ndarray | None  # the kernel at the asked scale, sums to 1; None: fall back to bicubic
    source: str  # 'estimated' or 'bicubic fallback'
    note: str = ""  # why it fell back; or, kept, what it is the mean of (``combined``)


def _even_crop(side: int, limit: int) -> int:
    return min(side, limit) // 2 * 2


class DeepLinearKernel(nn.Module):
    """The generator's six bias-free convolutions; ``forward()`` is their composite 13x13 kernel,
    as a correlation kernel (``kernel_downscale``'s and ``F.conv2d``'s sense)."""

    def __init__(self, channels: int, gen: torch.Generator) -> None:
        super().__init__()
        shapes, c_in = [], 1
        for i, t in enumerate(G_TAPS):
            c_out = 1 if i == len(G_TAPS) - 1 else channels
            shapes.append((c_out, c_in, t, t))
            c_in = c_out
        self.weights = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(s), 0.1, generator=gen)) for s in shapes)

    def forward(self) -> torch.Tensor:
        w0 = self.weights[0]
        # A unit impulse through the layers gives the composite kernel flipped (each layer
        # correlates); padding by K_SIZE - 1 keeps all of it.
        x = F.conv2d(torch.ones(1, 1, 1, 1, device=w0.device, dtype=w0.dtype), w0, padding=K_SIZE - 1)
        for w in self.weights[1:]:
            x = F.conv2d(x, w)
        return x[0, 0].flip(0, 1)


class Discriminator(nn.Module):
    """The authors' patch discriminator: a 7x7 convolution without activation, five 1x1
    convolution + batch norm + ReLU blocks, a 1x1 convolution to one map, sigmoid; spectral norm on
    every convolution. Its map is 6 pixels smaller than its input on a side."""

    def __init__(self, channels: int, gen: torch.Generator) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm

        def conv(c_in: int, c_out: int, taps: int) -> nn.Conv2d:
            layer = nn.Conv2d(c_in, c_out, taps)
            nn.init.xavier_normal_(layer.weight, 0.1, generator=gen)
            nn.init.zeros_(layer.bias)
            return sn(layer)

        blocks: list[nn.Module] = [conv(channels, D_CHANNELS, D_TAPS)]
        for _ in range(D_LAYERS - 2):
            bn = nn.BatchNorm2d(D_CHANNELS)
            with torch.no_grad():
                bn.weight.copy_(1 + 0.02 * torch.randn(D_CHANNELS, generator=gen))
            blocks += [conv(D_CHANNELS, D_CHANNELS, 1), bn, nn.ReLU()]
        blocks += [conv(D_CHANNELS, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def rim_mask(size: int = K_SIZE) -> torch.Tensor:
    """Weights of the boundaries loss: 30 x (1 - a wide Gaussian / its peak) on the outer ring of
    ``(size - ceil(size / 2)) // 2 - 1`` taps (2 at 13), 0 inside (the authors' penalty mask)."""
    z = np.arange(-(size // 2), size - size // 2, dtype=np.float64)
    g = np.exp(-z ** 2 / (2 * size ** 2))
    mask = 1 - np.outer(g, g) / g.max() ** 2
    margin = (size - (size // 2 + size % 2)) // 2 - 1
    mask[margin:size - margin, margin:size - margin] = 0
    return torch.from_numpy(RIM_PENALTY * mask)


def edge_sampler(gray: np.ndarray, crop: int) -> np.ndarray:
    """Probabilities of each pixel as a crop's centre: the density of the image's strongest 3 %
    gradients (in x, in y and in magnitude) around it, blurred over half a crop, zero where the
    crop would not fit (the authors' ``create_gradient_map`` and ``create_probability_map``)."""
    from scipy.signal import convolve2d

    gy, gx = np.gradient(gray)
    maps = []
    for g in (np.abs(gx), np.abs(gy), np.hypot(gx, gy)):
        g = g.copy()
        g[:5], g[-5:], g[:, :5], g[:, -5:] = 0, 0, 0, 0  # image borders: not edges
        top = np.quantile(g, 0.97)
        m = (g > top).astype(np.float64)
        maps.append(m / max(m.sum(), 1.0))
    density = convolve2d(sum(maps), np.ones((5, 5)) / 25, mode="same")
    half = max(1, crop // 2)
    prob = convolve2d(density, np.ones((half, half)), mode="same")
    prob[:half], prob[-half:], prob[:, :half], prob[:, -half:] = 0, 0, 0, 0
    total = prob.sum()
    return (prob / total).ravel() if total > 0 else np.full(prob.size, 1.0 / prob.size)


class Crops:
    """Crops of one image as the authors draw them: centres by ``edge_sampler``, top-left even.

    A centre is drawn as ``numpy.random.Generator.choice(n, p=prob)`` draws it (one uniform, the
    first cumulative probability above it), from the cumulative sum made once instead of at each
    of the thousands of draws: the same centres from the same stream."""

    def __init__(self, image: torch.Tensor, size: int, rng: np.random.Generator) -> None:
        self.image, self.size, self.rng = image, size, rng
        self.h, self.w = image.shape[-2:]
        a = image.cpu().double().numpy()
        gray = np.tensordot([0.299, 0.587, 0.114], a, 1) if a.shape[0] == 3 else a.mean(0)  # the authors' rgb2gray
        cdf = edge_sampler(gray, size).cumsum()
        self.cdf = cdf / cdf[-1]

    def corner(self) -> tuple[int, int]:
        """The next crop's top-left corner."""
        idx = int(self.cdf.searchsorted(self.rng.random(), side="right"))
        row, col = divmod(idx, self.w)
        top = min(max(0, row - self.size // 2), self.h - self.size)
        left = min(max(0, col - self.size // 2), self.w - self.size)
        return top - top % 2, left - left % 2

    def __call__(self) -> torch.Tensor:
        top, left = self.corner()
        return self.image[:, top:top + self.size, left:left + self.size]


def post_process(kernel: np.ndarray) -> np.ndarray:
    """The generator's kernel with its negative taps set to 0, summing to 1. (The authors keep its
    40 largest taps less 0.75 x the 41st: that narrows a wide kernel, and measured worse here, see
    docs/BENCHMARKS.md.)"""
    k = np.clip(kernel, 0, None)
    return k / k.sum()


@dataclass
class Start:
    """One image's estimator as it starts: its nets, crops and streams, all drawn from its seed."""

    G: DeepLinearKernel
    D: Discriminator  # on the host: ``estimate_x2`` moves it, a pack copies its weights out
    g_crops: Crops  # the generator's inputs
    d_crops: Crops  # the discriminator's real examples
    noise: torch.Generator  # the discriminator's input noise, drawn on the host: the same on any device
    crop: int  # the generator's input side


def start(image: torch.Tensor, seed: int = 0, dtype: torch.dtype = torch.float32) -> Start:
    """The estimator of ``image`` (C, H, W) in [0, 1], seeded: the authors' shave of synthetic
    borders, their [-1, 1] range, and crops that shrink with a small image down to 32 pixels. (A
    ``dtype`` other than float32 is for the tests: in float64 a pack and a lone estimate agree
    for many steps, where float32's rounding soon sends two GAN runs apart.)"""
    if image.dim() != 3 or image.shape[0] < 1:
        raise ValueError(f"estimate_x2 expects an image (C, H, W), got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    shave = EDGE_SHAVE if min(h, w) - 2 * EDGE_SHAVE >= CROP else 0
    img = image[:, shave:h - shave, shave:w - shave].to(dtype) * 2 - 1
    crop = _even_crop(min(img.shape[-2:]), CROP)
    if crop < MIN_SIDE:
        raise ValueError(f"image {w}x{h} is too small to estimate a kernel from (a side under 32 pixels)")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    g_crops, d_crops = Crops(img, crop, rng), Crops(img, output_side(crop), rng)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # spectral norm's first vectors, then the input noise
        G, D = DeepLinearKernel(G_CHANNELS, gen).to(dtype), Discriminator(img.shape[0], gen).to(dtype)
        noise = torch.Generator()
        noise.set_state(torch.get_rng_state())
    return Start(G, D, g_crops, d_crops, noise, crop)


def output_side(crop: int) -> int:
    """The generator's output side for a ``crop``-pixel input (26 for 64), the discriminator's input."""
    return (crop - K_SIZE) // 2 + 1


def estimate_x2(image: torch.Tensor, steps: int = STEPS, seed: int = 0, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> np.ndarray:
    """KernelGAN on ``image`` (C, H, W) in [0, 1]: its x2 kernel, post-processed (``post_process``).

    The image must have a side of at least 32 pixels (the crops shrink with it, down to 32)."""
    device = torch.device(device)
    s = start(image.to(device), seed, dtype)
    k = _train(s.G.to(device), s.D.to(device), s, steps, device)
    return post_process(k)


def bicubic_target(crop: torch.Tensor, out: int) -> torch.Tensor:
    """The crop (C, 1, n, n) shrunk by MATLAB-bicubic x2, cut to the generator's ``out`` pixels
    around the same centres (the authors' bicubic loss target)."""
    kb = torch.as_tensor(bicubic_kernel(2)[:8, :8], dtype=crop.dtype, device=crop.device)
    down = F.conv2d(crop, kb[None, None], stride=2, padding=3)
    cut = (down.shape[-1] - out) // 2
    return down[..., cut:cut + out, cut:cut + out]


class Schedule:
    """The authors' Learner, after each step: the learning rates cut by 10 every 750 steps; the
    bicubic loss's weight, once that loss has been under 0.4 for 3 steps in a row, cut by 100
    every 200 steps, and below 5e-3 the centre and sparsity losses switched on. A budget below
    3000 steps walks the same schedule faster (every interval scaled by steps / 3000)."""

    def __init__(self, steps: int) -> None:
        frac = steps / STEPS
        self.rate_every = max(1, round(RATE_EVERY * frac))
        self.lambda_every = max(1, round(LAMBDA_EVERY * frac))
        self.rate = LEARNING_RATE
        self.bicubic, self.centre, self.sparse = BICUBIC, 0.0, 0.0
        self.close_count, self.close = 0, False

    def after(self, step: int, loss_bicubic: float) -> None:
        """After step ``step`` (from 0), whose bicubic loss was ``loss_bicubic``."""
        if step == 0:
            return
        if step % self.rate_every == 0:
            self.rate /= RATE_CUT
        if not self.close:
            self.close_count = self.close_count + 1 if loss_bicubic < CLOSE_TO_BICUBIC else 0
            self.close = self.close_count >= 3
        elif step % self.lambda_every == 0 and self.bicubic > LAMBDA_MIN:
            self.bicubic = max(self.bicubic / LAMBDA_DECAY, LAMBDA_MIN)
            if self.centre == 0 and self.bicubic < 5e-3:
                self.centre, self.sparse = CENTRALIZED, SPARSE


CENTRE = K_SIZE // 2 + 0.5 * (2 - K_SIZE % 2)  # where bicubic x2 puts a kernel's centre of mass: 6.5


def _train(G: DeepLinearKernel, D: Discriminator, s: Start, steps: int, device: torch.device) -> np.ndarray:
    opt_g = torch.optim.Adam(G.parameters(), lr=LEARNING_RATE, betas=BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr=LEARNING_RATE, betas=BETAS)
    dtype = s.g_crops.image.dtype
    mask = rim_mask().to(device, dtype)
    idx = torch.arange(K_SIZE, device=device, dtype=dtype)
    sched = Schedule(steps)

    def fake(k: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        # (C, n, n) -> (1, C, m, m): each channel through the kernel alone, every other pixel kept
        return F.conv2d(crop[:, None], k[None, None], stride=2).transpose(0, 1)

    for step in range(steps):
        tally.add_estimated(1)
        g_in = s.g_crops()
        real = s.d_crops()[None]
        real = real + torch.randn(real.shape, generator=s.noise, dtype=dtype).to(device) * (2 / 255)  # 1/255 on [0, 1]
        # the generator's step
        k = G()
        out = fake(k, g_in)
        d_fake = D(out)
        loss_bicubic = F.mse_loss(out, bicubic_target(g_in[:, None], out.shape[-1]).transpose(0, 1))
        total = k.sum()
        com = torch.stack(((k.sum(1) * idx).sum() / total, (k.sum(0) * idx).sum() / total))
        loss = (F.l1_loss(d_fake, torch.ones_like(d_fake)) + sched.bicubic * loss_bicubic
                + SUM2ONE * (1 - total).abs() + BOUNDARIES * (k * mask).abs().mean()
                + sched.centre * F.mse_loss(com, torch.full_like(com, CENTRE))
                + sched.sparse * (k.abs() + 1e-12).pow(0.2).mean())
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        # the discriminator's step, on the updated generator's output
        with torch.no_grad():
            out = fake(G(), g_in)
            out = out + torch.randn(out.shape, generator=s.noise, dtype=dtype).to(device) * (1 / 255)
        d_real, d_fake = D(real), D(out)
        loss_d = 0.5 * (F.l1_loss(d_fake, torch.zeros_like(d_fake)) + F.l1_loss(d_real, torch.ones_like(d_real)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        rate = sched.rate
        sched.after(step, loss_bicubic.item())
        if sched.rate != rate:
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = sched.rate
    with torch.no_grad():
        return G().double().cpu().numpy()


def kernel_at(k2: np.ndarray, scale: int) -> np.ndarray:
    """The kernel for integer ``scale`` 2 or 4 from an x2 estimate (x4: ``analytic_kernel``)."""
    if scale == 2:
        return k2
    if scale == 4:
        return analytic_kernel(k2)
    raise ValueError(f"a kernel can be estimated for x2 and x4 only, not x{scale}")


def too_small(image: torch.Tensor) -> Estimate | None:
    """Bicubic, and why, for an image (C, H, W) too small to estimate a kernel from; else None."""
    if min(image.shape[-2:]) < MIN_SIDE:
        return Estimate(None, "bicubic fallback", f"a side under {MIN_SIDE} pixels: too small to estimate from")
    return None


def failed(k2: np.ndarray) -> str | None:
    """Why an x2 estimate is a failed run of the GAN and no kernel, or None: diverged, collapsed to a
    line or a point, run off its centre, or wider than its taps hold (``WIDEST``)."""
    if not np.isfinite(k2).all() or k2.sum() <= 0:
        return "its estimate diverged"
    width, anisotropy = kernel_moments(k2)
    across = 2 * width / (1 + anisotropy)  # the smaller principal std
    if across < NARROWEST_ACROSS:
        return (f"its estimate collapsed to a line or a point ({across:.2f} px across, under "
                f"{NARROWEST_ACROSS:g}): a failed estimate")
    from scipy import ndimage

    off = float(np.hypot(*(np.array(ndimage.center_of_mass(k2)) - (np.array(k2.shape) - 1) / 2)))
    if off > OFF_CENTRE:
        return f"its estimate sits {off:.1f} px off its centre (more than {OFF_CENTRE:g}): a failed estimate"
    if width > WIDEST:
        return (f"its estimate is {width:.2f} px wide (x2), more than the {WIDEST:g} px its {K_SIZE} taps hold: "
                f"a failed estimate")
    return None


def judged(k2: np.ndarray, scale: int, trust_width: float = 0.0) -> Estimate:
    """An x2 estimate at ``scale``, or bicubic where it is a failed run (``failed``), narrower than
    ``trust_width`` (HR pixels, ``kernel_moments``), or at x4 wider than ``WIDEST_X4``.
    Estimates of sharp images come out too wide (1.44-1.56 px for bicubic-downscaled ones, where
    bicubic is 0.85), and a fit with a kernel wider than the truth sharpens far more than one with a
    narrower kernel blurs: the ``real`` preset's 1.6 guards camera photos against that, at the price
    of the gain on blurry images estimated narrow (on BSD100RK it discarded good estimates;
    docs/BENCHMARKS.md)."""
    why = failed(k2)
    if why:
        return Estimate(None, "bicubic fallback", why)
    width = kernel_moments(k2)[0]
    if width < trust_width:
        return Estimate(None, "bicubic fallback", f"its estimate is {width:.2f} px wide (x2), under the "
                                                  f"{trust_width:g} px it is trusted from")
    kernel = kernel_at(k2, scale)
    if scale == 4 and (wide := kernel_moments(kernel)[0]) > WIDEST_X4:
        return Estimate(None, "bicubic fallback", f"its x4 kernel is {wide:.2f} px wide, more than the {WIDEST_X4:g} "
                                                  f"px trusted at x4 (the blind recipe's widest is 3.14)")
    return Estimate(kernel, "estimated")


def _centred_mean(kernels: list[np.ndarray]) -> np.ndarray:
    """The mean of x2 estimates, each first moved (sub-pixel) so that its centre of mass is at their
    mean centre: draws that sit a fraction of a pixel apart would otherwise average to a wider kernel."""
    from scipy import ndimage

    centres = [np.array(ndimage.center_of_mass(k)) for k in kernels]
    at = np.mean(centres, axis=0)
    moved = [np.clip(ndimage.shift(k, at - c, order=3, mode="constant"), 0, None) for k, c in zip(kernels, centres)]
    mean = np.mean([m / m.sum() for m in moved], axis=0)
    return mean / mean.sum()


def combined(draws: list[np.ndarray], scale: int, trust_width: float = 0.0) -> Estimate:
    """One estimate from several runs of the GAN on the same image (``kernel_restarts``, each its own
    seed): the failed runs (``failed``) dropped, the others' centred mean judged as one estimate
    (``judged``). One draw is ``judged`` itself. A run fails now and then (BSD100 101085 came out 3.67
    px wide in one pack, 1.59 in another), and alone it costs the image its estimate; the mean of
    two good draws is also a little closer to the truth than either (docs/BENCHMARKS.md)."""
    if len(draws) == 1:
        return judged(draws[0], scale, trust_width)
    reasons = [failed(k) for k in draws]
    kept = [k for k, why in zip(draws, reasons) if why is None]
    if not kept:
        said = " / ".join(str(why).removesuffix(": a failed estimate") for why in reasons)
        return Estimate(None, "bicubic fallback", f"each of its {len(draws)} runs failed: {said}")
    est = judged(_centred_mean(kept), scale, trust_width)
    dropped = len(draws) - len(kept)
    why_dropped = " / ".join(str(why).removesuffix(": a failed estimate") for why in reasons if why)
    said = f"the mean of {len(kept)} of its {len(draws)} runs, {dropped} failed ({why_dropped})" if dropped else \
        f"the mean of its {len(draws)} runs"
    if est.kernel is None:
        return Estimate(None, est.source, f"{est.note}; it was {said}")
    return Estimate(est.kernel, est.source, said)


def vetoed(est: Estimate, image: torch.Tensor, least: float, device: torch.device | str = "cpu") -> Estimate:
    """``est``, or bicubic where ``image`` (C, H, W) in [0, 1] measures sharp: its own patches recur
    best at a shrink narrower than ``least`` px (``recurrence.recurrence_width``, on ``device``; 0: no
    check, and the image goes nowhere). The
    estimate's own width cannot say it: KernelGAN gave sharp, bicubic-downscaled inputs kernels of
    1.5-2.2 px, as wide as it gave the blind recipe's (docs/BENCHMARKS.md)."""
    if est.kernel is None or least <= 0:
        return est
    from .recurrence import SMALLEST, recurrence_width

    was = f"its estimate: {kernel_moments(est.kernel)[0]:.2f} px wide" + (f", {est.note}" if est.note else "")
    if min(image.shape[-2:]) < SMALLEST:
        return Estimate(None, "bicubic fallback", f"a side under {SMALLEST} pixels: too small to check that it is not "
                                                  f"sharp ({was})")
    width = recurrence_width(image.to(device))
    if width is None:
        return Estimate(None, "bicubic fallback", f"the image has too little detail to check that it is not sharp "
                                                  f"({was})")
    if width >= least:
        return est
    return Estimate(None, "bicubic fallback", f"the image's own patches recur best at a {width:.1f} px shrink, under "
                                              f"the {least:g} px an estimate is trusted from: a sharp image ({was})")


def restart_seeds(seed: int, restarts: int) -> list[int]:
    """The seeds of an image's ``restarts`` runs of the GAN: the first is ``seed``, so that one run is
    the estimate it always was."""
    return [seed + r for r in range(restarts)]


# A recurrence estimate narrower than this (HR pixels, at the scale) is a sharp image's: the bicubic
# inputs of the calibration's dead-leaves images fall at 0.63-0.69 px on its x2 line and 1.04-1.50 on
# its x4 line (a Gaussian that narrow is no better a kernel for them than bicubic, which made them).
SHARPEST = {2: 0.7, 4: 1.5}
# The smallest side the recurrence estimator reads a kernel from. The lines were fitted on inputs of
# 256 (x2) and 128 pixels (x4), and a small image reads wide: centre crops of four sharp BSD100 x2
# inputs read 2.7-3.3 px at 40 pixels, 0.7-2.3 at 64 and 0.7-1.6 at 96 (bicubic: 0.85), which a fit
# takes for a blurred image (a hostile tester's, 2026-12-08).
RECURRENCE_SIDE = 96


def gaussian_kernel(width: float) -> np.ndarray:
    """An isotropic Gaussian of std ``width`` (HR pixels) on an odd grid that holds 3 std a side
    (``K_SIZE`` at least), centred on its middle tap, summing to 1."""
    half = max(K_SIZE // 2, int(np.ceil(3 * width)))
    z = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-z ** 2 / (2 * width ** 2))
    return np.outer(g, g) / g.sum() ** 2


def by_recurrence(image: torch.Tensor, scale: int, device: torch.device | str = "cpu") -> Estimate:
    """The ``recurrence`` estimator: an isotropic Gaussian as wide as the image's own patch recurrence
    says the kernel at ``scale`` (2 or 4) was (``recurrence.calibrated_width``, a line of its own at
    each scale); bicubic where the image reads as sharp (``SHARPEST``), has no detail, is under
    ``RECURRENCE_SIDE``, or reads wider than any kernel trusted (``WIDEST``, ``WIDEST_X4``). No
    training: seconds an image on a CPU. Its width follows the truth's where KernelGAN's does not,
    and it has no shape (docs/BENCHMARKS.md, "Patch recurrence, calibrated"). KernelGAN's own
    guards (``kernel_trust_width``, ``kernel_trust_recurrence``: set for its habit of reading sharp
    images 1.5-2 px wide) are not this estimator's."""
    from .recurrence import calibrated_width

    if min(image.shape[-2:]) < RECURRENCE_SIDE:
        return Estimate(None, "bicubic fallback", f"a side under {RECURRENCE_SIDE} pixels: too small to read a kernel "
                                                  f"from its patch recurrence")
    width = calibrated_width(image.to(device), scale)
    if width is None:
        return Estimate(None, "bicubic fallback", "the image has too little detail to measure its patch recurrence")
    if width < SHARPEST[scale]:
        read = f"{width:.2f} px" if width > 0 else "under 0 px"  # (the line holds over its calibration's range)
        return Estimate(None, "bicubic fallback", f"its patches recur as a sharp image's (they read {read} at x{scale} "
                                                  f"on the calibration's line, under {SHARPEST[scale]:g})")
    widest = WIDEST if scale == 2 else WIDEST_X4  # past each line's range, and the recipe's widest (2.24, 3.14 px)
    if width > widest:
        return Estimate(None, "bicubic fallback", f"its patches recur as an image blurred by {width:.2f} px at "
                                                  f"x{scale}, more than the {widest:g} px trusted")
    return Estimate(gaussian_kernel(width), "estimated")


def estimate_kernel(image: torch.Tensor, scale: int, steps: int = STEPS, seed: int = 0,
                    device: torch.device | str = "cpu", trust_width: float = 0.0, restarts: int = 1,
                    trust_recurrence: float = 0.0, estimator: str = "kernelgan") -> Estimate:
    """The downscaling kernel of ``image`` (C, H, W) in [0, 1] at ``scale`` 2 or 4, estimated alone:
    by KernelGAN (``estimate_x2``, ``restarts`` times: ``combined``; bicubic where the image is too
    small, ``too_small``, the estimate is not trusted, or the image measures sharp, ``vetoed``), or by
    the image's patch recurrence (``by_recurrence``, with guards of its own). ``pack.kernel_estimates`` makes many
    KernelGAN estimates at once, each as here."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if estimator == "recurrence":  # (steps, restarts and the two trust settings are KernelGAN's)
        return by_recurrence(image, scale, device)
    est = too_small(image) or combined([estimate_x2(image, steps, s, device) for s in restart_seeds(seed, restarts)],
                                       scale, trust_width)
    return vetoed(est, image, trust_recurrence, device)
