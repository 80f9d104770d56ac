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

What keeps a GPU busy:
- the random choices of each pair (crop, rotation, affine map) are drawn on the
  host from the image's own stream, but the K fathers and sons are made on the
  device in a few batched ops, from one small upload per step;
- the whole step (pairs, forward, backward, Adam) is one CUDA graph replay;
  finished slots ride along masked, and a draining pack compacts itself once
  a quarter of them are empty (without graphs, only the live slots are computed);
- the host never waits for the device inside the loop: losses, test errors and
  outputs come back through pinned buffers and events, and are read only when
  needed (the learning-rate rule reads a test at least 9 steps after it ran);
- tests and outputs read copies of their slot's weights and image, so they may
  run late, on a second stream beside the training (``PackOptions.beside``);
- the networks run in bfloat16 by default (master weights and Adam in float32).

Images that cannot share a pack (gradual scale steps, ``max_iters`` 0, another
channel count, network shape, crop, scale or kernel) are fitted on their own by
``engine.super_resolve``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import FitConfig
from ..engine.super_resolve import SRResult, super_resolve, upscale_with
from ..engine.fit import FitLog, Schedule, augment_of, reconstruction_error, reconstruction_noise
from ..engine.infer import MemoryPlan
from ..engine.kernels import shift_kernel
from ..engine.model import ZSSRNet
from .conv import CONVS, split_conv, triton_conv
from ..engine.pairs import Augment, Draw, draw_father, son_noise, son_shape, upload, warp_batch
from ..engine.resize import imresize


@dataclass(frozen=True)
class PackOptions:
    """How a pack runs on a GPU; a CPU always runs float32 eagerly (what measures best there)."""

    graphs: bool = True  # record the full-pack training step once as a CUDA graph, then replay it
    # bfloat16 networks (float32 master weights and Adam): 1.2-1.6x faster packs on an H200 for
    # -0.02/-0.03 dB of BSD100 mean PSNR-Y (docs/BENCHMARKS.md); --precision fp32 turns it off.
    bf16: bool = True
    channels_last: bool = True  # NHWC activations: the layout tensor-core convolutions want
    # Let cuDNN time its algorithms for the pack's one training shape (the grouped convolutions are
    # what bounds a pack, see docs/BENCHMARKS.md). Off by default; run's probe turns it on where it
    # measures faster (pack.size.plan_pack).
    tune: bool = False
    # How the K convolutions run: 'grouped' (one grouped cuDNN convolution per layer, measured),
    # 'split' (the same, but weight gradients as batched matrix products: cuDNN's grouped weight
    # gradient can be its slowest kernel), 'triton' (our own implicit-GEMM kernels for the forward,
    # input and weight gradients, ReLUs fused, and a one-kernel Adam; pack.conv) or 'bmm' (im2col
    # and batched products throughout).
    conv: str = "grouped"
    # Pad the 3-channel ends (first layer in, last layer out) to 8 channels a group: tensor-core
    # kernels want multiples of 8, and a direct kernel on 3 channels a group can cost far more than
    # its 1.5% of the FLOPs. The pack-size probe (pack.size.plan_pack) times 'split', 'triton' and
    # 'pad_thin' and keeps what is faster: on an H100, 'triton' (docs/BENCHMARKS.md).
    pad_thin: bool = False
    # A draining pack (no job left to fill its empty slots) is compacted once its live slots are
    # at most this fraction of its positions; each compaction records the step again (one eager
    # step and the capture). 0.75 rather than 0.5 gave a 100-image pack of 100 ~9% less training
    # on an H200's step times; 0.9 rather than 0.75 another 0.6-2.4% on an H100's (run 1), as a
    # recording again costs 0.15 down to 0.04 s, and no worse for packs of 32 to 100 on either
    # card (benchmarks/drain_model.py, a replay of this schedule over measured figures;
    # docs/BENCHMARKS.md).
    compact_below: float = 0.9
    # Run tests and outputs on a second CUDA stream beside the training (``_Beside``): ~3,700 tests
    # of ~40 small kernels each, and 100 outputs, in a BSD100 run, which on the training stream
    # queue between its steps. Off until an H100 has timed it (benchmarks/throughput.py ``:beside``).
    beside: bool = False


# The sizes a draining pack shrinks to (the next one up from its live slots, the rest riding along
# masked), steps of 12-25%: shapes that recur from batch to batch, so that cuDNN's tuning (``tune``),
# which times its algorithms once per new shape, is paid at most 28 times per process rather than
# per drain. benchmarks/drain_model.py puts the cost against exact sizes at under 1%.
COMPACT_SIZES = tuple(range(1, 8)) + tuple(range(8, 16, 2)) + tuple(range(16, 32, 4)) + tuple(range(32, 129, 8))


@dataclass
class Job:
    key: Any  # the caller's handle on the image (e.g. its work item)
    image: torch.Tensor  # (C, h, w) in [0, 1]
    cfg: FitConfig
    kernel: np.ndarray | None = None


def packable(cfg: FitConfig) -> bool:
    """Whether fits with these settings can share a pack (gradual scale steps and no training cannot)."""
    return not (cfg.scale_steps and len(cfg.steps) > 1 or cfg.max_iters == 0)


def signature(job: Job) -> tuple | None:
    """What must match for two jobs to share a pack; None for jobs that are fitted alone."""
    cfg, (c, h, w) = job.cfg, job.image.shape
    if not packable(cfg) or min(h, w) < cfg.crop:
        return None
    kernel = None
    if job.kernel is not None:
        k = np.ascontiguousarray(job.kernel, dtype=np.float64)
        kernel = hashlib.sha1(k.tobytes() + str(k.shape).encode()).hexdigest()
    return (c, cfg.depth, cfg.width, cfg.crop, tuple(cfg.scale), kernel, cfg.noise_std > 0)


class _Readback:
    """Device values copied to the host asynchronously; ``get`` waits only for that copy."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def push(self, t: torch.Tensor) -> tuple[torch.Tensor, Any]:
        t = t.detach()
        if not self.cuda:
            return t.clone(), None
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    @staticmethod
    def ready(handle: tuple[torch.Tensor, Any]) -> bool:
        return handle[1] is None or handle[1].query()

    @staticmethod
    def get(handle: tuple[torch.Tensor, Any]) -> torch.Tensor:
        if handle[1] is not None:
            handle[1].synchronize()
        return handle[0]


class PackedNets(nn.Module):
    """K ZSSR networks; layer weights (K, out, in, 3, 3), run as one grouped convolution.

    Every layer's weights are a view of ``flat`` (K, P), one row per slot, so the
    optimizer updates all layers with a dozen whole-pack operations instead of a
    dozen per layer (each one a kernel launch inside a GPU step). Build it on its
    ``device``: ``.to()`` would give the layers copies apart from ``flat``.
    """

    def __init__(self, k: int, channels: int, depth: int, width: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        sizes = [channels] + [width] * (depth - 1) + [channels]
        shapes = [(cout, cin, 3, 3) for cin, cout in zip(sizes[:-1], sizes[1:])]
        self.flat = torch.zeros(k, sum(math.prod(s) for s in shapes), device=device)
        views, at = [], 0
        for shape in shapes:
            n = math.prod(shape)
            views.append(nn.Parameter(self.flat[:, at:at + n].view(k, *shape)))  # shares flat's memory
            at += n
        self.weights = nn.ParameterList(views)

    def init_slot(self, slot: int, init_variance: float, gen: torch.Generator) -> None:
        """Draw slot's weights exactly as ``ZSSRNet`` draws them from the same generator."""
        with torch.no_grad():
            for w in self.weights:
                fan_in = w.shape[2] * 9
                fresh = torch.empty(w.shape[1:]).normal_(0.0, math.sqrt(init_variance / fan_in), generator=gen)
                w[slot].copy_(upload(fresh, w.device))

    def forward(self, x: torch.Tensor, slots: torch.Tensor | None = None, channels_last: bool = False,
                conv: str = "grouped", pad_thin: bool = False) -> torch.Tensor:
        """``x``: (N, C, H, W), row n the input of slot ``slots[n]`` (default: all K slots) -> (N, C, H, W).

        ``conv``: 'grouped' (cuDNN's grouped convolutions), 'split' or 'triton' (see
        ``pack.conv``) or 'bmm' (im2col and batched products throughout). ``pad_thin`` runs the
        C-channel ends (the first layer's input, the last layer's output) padded with
        zeros to a multiple of 8 channels, the group width tensor-core kernels take:
        the same sums, the padded weights constant zeros.
        """
        if conv == "bmm":
            return self._forward_bmm(x, slots)
        n, c, h, w = x.shape
        cp = -(-c // 8) * 8 if pad_thin else c
        y = F.pad(x, (0, 0, 0, 0, 0, cp - c)) if cp > c else x
        y = y.reshape(1, n * cp, h, w)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        y = y.contiguous(memory_format=fmt)
        last = len(self.weights) - 1
        for i, wt in enumerate(self.weights):
            if slots is not None:  # a draining pack computes only its live slots
                wt = wt.index_select(0, slots)
            if cp > c and i == 0:
                wt = F.pad(wt, (0, 0, 0, 0, 0, cp - c))  # zero weights on the zero input channels
            if cp > c and i == last:
                wt = F.pad(wt, (0, 0, 0, 0, 0, 0, 0, cp - c))  # outputs that stay zero, dropped below
            if conv == "triton":  # its own weight layout, and the ReLUs fused into its kernels
                y = triton_conv(y, wt, relu=i < last, after_relu=i > 0)
                continue
            wt = wt.reshape(-1, *wt.shape[2:]).contiguous(memory_format=fmt)
            y = F.conv2d(y, wt, padding=1, groups=n) if conv == "grouped" else split_conv(y, wt, n)
            if i < last:
                y = torch.relu(y)
        return x + y.reshape(n, cp, h, w)[:, :c].to(x.dtype)

    def _forward_bmm(self, x: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        """The same networks as im2col and batched matrix products: row n's 3x3 neighbourhoods
        (C*9, H*W), in ``unfold``'s channel-major order, times slot n's (out, C*9) weights."""
        n, c, h, w = x.shape
        y = x
        for i, wt in enumerate(self.weights):
            if slots is not None:
                wt = wt.index_select(0, slots)
            y = torch.bmm(wt.reshape(n, wt.shape[1], -1), F.unfold(y, 3, padding=1)).view(n, -1, h, w)
            if i < len(self.weights) - 1:
                y = torch.relu(y)
        return x + y.to(x.dtype)


class PackedAdam:
    """torch's Adam applied slot-wise to a (K, P) parameter tensor: a step count and a learning rate per
    row, all on the device, in a dozen whole-pack operations (or, ``fused``, one Triton kernel)."""

    def __init__(self, flat: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8, fused: bool = False) -> None:
        self.p, self.betas, self.eps = flat, betas, eps
        self.fused = fused  # one Triton kernel for the update (``pack.triton_adam``): the pack's Triton way
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat)
        self.t = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)

    def reset(self, slot: int) -> None:
        self.m[slot].zero_()
        self.v[slot].zero_()
        self.t[slot] = 0

    def keep(self, idx: torch.Tensor, flat: torch.Tensor) -> PackedAdam:
        """This optimizer's state for rows ``idx`` only, driving ``flat`` (a compacted pack)."""
        opt = PackedAdam(flat, self.betas, self.eps, self.fused)
        for new, old in ((opt.m, self.m), (opt.v, self.v), (opt.t, self.t)):
            new.copy_(old.index_select(0, idx))
        return opt

    @torch.no_grad()
    def step(self, grads: Iterable[torch.Tensor], lr: torch.Tensor, active: torch.Tensor) -> None:
        """``grads``: (K, ...) tensors whose rows, flattened and joined, line up with the parameter rows;
        ``lr``: (K,) float64 rates; ``active``: (K,) bool, the slots that took this step (others stay put).

        The same arithmetic as ``torch.optim.Adam`` (single-tensor) on each active row; an inactive
        row's moments are left as they are by per-row coefficients (0 and 1), not by copies.
        """
        b1, b2 = self.betas
        dt = self.p.dtype
        g = torch.cat([x.reshape(x.shape[0], -1) for x in grads], dim=1)
        self.t += active.double()
        t = self.t.clamp(min=1)
        keep = active[:, None]
        step_size = torch.where(active, lr / (1 - b1 ** t), 0.0).to(dt)[:, None]
        bc2_sqrt = (1 - b2 ** t).sqrt().to(dt)[:, None]
        m_weight = torch.where(keep, 1 - b1, 0.0).to(dt)
        v_decay = torch.where(keep, b2, 1.0).to(dt)
        v_gain = torch.where(keep, 1 - b2, 0.0).to(dt)
        if self.fused:
            from .triton_adam import adam_rows

            coef = torch.cat([m_weight, v_decay, v_gain, step_size, bc2_sqrt], dim=1)
            adam_rows(self.p, g, self.m, self.v, coef, self.eps)
            return
        self.m.lerp_(g, m_weight)
        self.v.mul_(v_decay).addcmul_(g * v_gain, g)
        denom = (self.v.sqrt() / bc2_sqrt).add_(self.eps)
        self.p.sub_(self.m.div(denom).mul_(step_size))


def _can_record(device: torch.device) -> bool:
    """Whether a pack on ``device`` can record its step as a graph (tests stand in a CPU recording)."""
    return device.type == "cuda"


@contextlib.contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Work in the block runs on a fresh side stream, ordered after and before the current stream's
    (PyTorch's advice for the eager warm-up before a graph capture); off a GPU, in place."""
    if device.type != "cuda":
        yield
        return
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


def _capture(step: Callable[[], torch.Tensor], device: torch.device) -> tuple[Any, torch.Tensor]:
    """``step`` recorded as a CUDA graph, and the tensor its replays write their result to."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # readers/writers run beside
        rows = step()
    return graph, rows


class _Pack:
    """The device side of a pack: networks, optimizer, per-slot buffers, and the recorded step."""

    def __init__(self, k: int, first: Job, device: torch.device, options: PackOptions) -> None:
        cfg = first.cfg
        c = first.image.shape[0]
        self.k, self.device, self.crop = k, device, cfg.crop
        self.sf: tuple[float, float] = tuple(cfg.scale)  # type: ignore[assignment]
        cuda = device.type == "cuda"
        self.use_graphs = options.graphs and _can_record(device)
        self.bf16 = options.bf16 and cuda
        self.channels_last = options.channels_last and cuda
        self.tune = options.tune and cuda
        if options.conv not in CONVS:
            raise ValueError(f"PackOptions.conv must be one of {', '.join(CONVS)}, got {options.conv!r}")
        self.conv, self.pad_thin = options.conv, options.pad_thin
        self.shape = (c, cfg.depth, cfg.width)
        self.columns = list(range(k))  # position -> the slot's column in the loss history (see compact)
        self.nets = PackedNets(k, *self.shape, device=device)
        self.opt = PackedAdam(self.nets.flat, fused=options.conv == "triton" and cuda)
        self.probe = ZSSRNet(c, cfg.depth, cfg.width).to(device)  # one slot's network, for tests and outputs
        self.kernel = None
        if first.kernel is not None:
            self.kernel = torch.as_tensor(shift_kernel(first.kernel, cfg.scale), dtype=torch.float32, device=device)
        side = max(first.image.shape[-2:])
        self.src = torch.zeros(k, c, side, side, device=device)  # image k in the top-left corner, zeros around
        # Each row an inverse father map (3x3) and an exact flag. Rows start as the identity, not zeros: a
        # recording's warm-up steps compute every row, drawn or not, and a zero map divides by zero. The NaN
        # gradient that makes then reaches the resting rows' Adam moments (0 * NaN), as it did on the H100.
        self.params = torch.zeros(k, 10, dtype=torch.float64, device=device)
        self.params[:, :9] = torch.eye(3, dtype=torch.float64).flatten()
        self.son_shape = son_shape((c, self.crop, self.crop), self.sf)
        self.noise = torch.zeros(k, *self.son_shape, device=device) if cfg.noise_std > 0 else None
        self.lr = torch.zeros(k, dtype=torch.float64, device=device)
        self.active = torch.zeros(k, dtype=torch.bool, device=device)
        self.graph: Any = None
        self.graph_rows: torch.Tensor | None = None
        self.recordings = 0
        self._live: tuple[tuple[int, ...], torch.Tensor] | None = None

    def place(self, slot: int, job: Job, gen: torch.Generator) -> None:
        """Start ``job`` in ``slot``: fresh weights from its stream, fresh Adam state; its image on the device."""
        self.nets.init_slot(slot, job.cfg.init_variance, gen)
        self.opt.reset(slot)
        img = upload(job.image.to(torch.float32).contiguous(), self.device)
        h, w = img.shape[-2:]
        if max(h, w) > self.src.shape[-1]:  # a larger image than any so far: grow the buffer, record again
            grown = torch.zeros(*self.src.shape[:2], max(h, w), max(h, w), device=self.device)
            grown[:, :, : self.src.shape[2], : self.src.shape[3]] = self.src
            self.src, self.graph, self.graph_rows = grown, None, None
        self.src[slot].zero_()
        self.src[slot, :, :h, :w] = img
        self.lr[slot] = job.cfg.learning_rate
        self.active[slot] = True

    def snapshot(self, slot: int, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of ``slot``'s weights (one flat row) and of its image (h, w), taken in stream order:
        what a test or an output reads, untouched by the slot's next steps, by the next image placed
        in it, or by the buffers moving when they grow or the pack compacts."""
        return self.nets.flat[slot].clone(), self.src[slot, :, : hw[0], : hw[1]].clone()

    def set_rate(self, slot: int, rate: float) -> None:
        self.lr[slot] = rate  # a fill on the device; the host does not wait

    def send_draws(self, params: np.ndarray, noise: torch.Tensor | None) -> None:
        self.params.copy_(upload(torch.from_numpy(params), self.device))
        if self.noise is not None and noise is not None:
            self.noise.copy_(upload(noise, self.device))

    def _train_step(self, live: torch.Tensor | None) -> torch.Tensor:
        pick = (lambda t: t) if live is None else (lambda t: t.index_select(0, live))
        params = pick(self.params)
        father = warp_batch(pick(self.src), params[:, :9].reshape(-1, 3, 3), params[:, 9] > 0.5, self.crop)
        son = imresize(father, (1 / self.sf[0], 1 / self.sf[1]), kernel=self.kernel if self.kernel is not None
                       else "cubic")
        if self.noise is not None:
            son = son + pick(self.noise)
        x = imresize(son.clamp(0, 1), self.sf, (self.crop, self.crop))
        cudnn = torch.backends.cudnn
        tuned = (cudnn.flags(enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic,
                             allow_tf32=cudnn.allow_tf32) if self.tune else contextlib.nullcontext())
        with tuned:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
                out = self.nets(x, live, self.channels_last, self.conv, self.pad_thin)
            rows = (out.float() - father).abs().mean(dim=(1, 2, 3))  # each image's own L1 mean
            grads = torch.autograd.grad(rows.sum(), list(self.nets.weights))
        self.opt.step(grads, self.lr, self.active)
        return rows.detach()

    def _record(self) -> None:
        """Record the full-pack step as a CUDA graph. Its warm-up steps and the capture run with no slot
        active: Adam then leaves every row as it was (per-row coefficients 0 and 1), so they change
        nothing, provided every row's step is finite (hence the identity rows of ``params``).

        Three warm-up steps before the pack's first recording (libraries' lazy set-up, as PyTorch
        advises); one before a recording again (after a compaction or a larger image), where only
        the new shapes are new: it saves two eager full-pack steps at each of a draining pack's
        ~11 sizes.
        """
        saved = self.active.clone()
        try:
            self.active.zero_()
            with _side_stream(self.device):
                for _ in range(1 if self.recordings else 3):
                    self._train_step(None)
            self.graph, self.graph_rows = _capture(lambda: self._train_step(None), self.device)
            self.recordings += 1
        except Exception as e:  # noqa: BLE001 - an eager pack is slower, not wrong
            warnings.warn(f"zssr-batch: recording the training step as a CUDA graph failed ({e}); running eagerly")
            self.use_graphs = False
        finally:
            self.active.copy_(saved)

    def needs_recording(self) -> bool:
        return self.use_graphs and self.graph is None

    def record(self) -> None:
        """Record the step now if it needs recording (``step`` would, first)."""
        if self.needs_recording():
            self._record()

    def step(self, live: list[int]) -> torch.Tensor:
        """One training step of the live slots; returns every position's loss, (K,) (0 where no slot is live).

        With graphs, empty positions ride along masked (Adam leaves them alone) and
        ``compact`` keeps them few; without, only live slots are computed.
        """
        self.record()
        if self.graph is not None:
            self.graph.replay()
            assert self.graph_rows is not None
            return self.graph_rows
        if len(live) == self.k:
            return self._train_step(None)
        key = tuple(live)
        if self._live is None or self._live[0] != key:
            self._live = (key, upload(torch.tensor(live), self.device))
        rows = self._train_step(self._live[1])
        return torch.zeros(self.k, device=self.device, dtype=rows.dtype).index_copy_(0, self._live[1], rows)

    def compact(self, keep: list[int]) -> None:
        """Shrink the pack to the positions ``keep`` (a draining pack), so a recorded step computes no empty slots."""
        idx = upload(torch.tensor(keep), self.device)
        k = len(keep)
        nets = PackedNets(k, *self.shape, device=self.device)
        nets.flat.copy_(self.nets.flat.index_select(0, idx))
        opt = self.opt.keep(idx, nets.flat)
        self.graph = self.graph_rows = self._live = None  # release the old recording before the next
        self.nets, self.opt, self.k = nets, opt, k
        self.src, self.params, self.lr, self.active = (t.index_select(0, idx) for t in
                                                       (self.src, self.params, self.lr, self.active))
        if self.noise is not None:
            self.noise = self.noise.index_select(0, idx)
        self.columns = [self.columns[i] for i in keep]


class _LossHistory:
    """Every slot's loss at every step, kept on the device and brought back a chunk at a time.

    Rows are pack positions; ``columns`` names the slot at each position (a slot's
    column is its position before any ``compact``), so a slot's curve survives
    the pack shrinking under it.
    """

    def __init__(self, k: int, device: torch.device, readback: _Readback, chunk: int = 64) -> None:
        self.device, self.readback, self.chunk = device, readback, chunk
        self.buf = torch.zeros(chunk, k, device=device)
        self.columns = list(range(k))
        self.start = self.n = 0  # first step of the open chunk, steps in it
        self.chunks: list[tuple[int, int, tuple, dict[int, int]]] = []  # (first step, steps, handle, column->row)

    def record(self, rows: torch.Tensor) -> None:
        self.buf[self.n].copy_(rows)
        self.n += 1
        if self.n == self.chunk:
            self.flush()

    def flush(self) -> None:
        """Send the open chunk to the host (in stream order: later writes to the buffer come after the copy)."""
        if self.n:
            pos = {c: p for p, c in enumerate(self.columns)}
            self.chunks.append((self.start, self.n, self.readback.push(self.buf[: self.n]), pos))
        self.start += self.n
        self.n = 0

    def regroup(self, columns: list[int]) -> None:
        self.flush()
        self.columns = columns
        self.buf = torch.zeros(self.chunk, len(columns), device=self.device)

    def losses(self, column: int, steps: range) -> list[float]:
        out: list[float] = []
        for start, n, handle, pos in self.chunks:
            lo, hi = max(steps.start, start), min(steps.stop, start + n)
            if lo < hi:
                out.extend(_Readback.get(handle)[lo - start:hi - start, pos[column]].tolist())
        return out

    def forget(self, before: int) -> None:
        self.chunks = [c for c in self.chunks if c[0] + c[1] > before]


class _DeviceClock:
    """The device's seconds per phase of the loop, for benchmarks: what the host's own seconds cannot
    show, since the device runs behind it. An event goes on the stream at each change of phase; the
    time between two events is charged to the phase the first one opened (so a gap in which the
    device waited on the host is charged to the phase after it). ``new_event`` makes a recorded
    event (``torch.cuda.Event``'s interface); None (a CPU) turns the clock off. Totals go to
    ``totals[f"{prefix}{phase}_s"]``."""

    def __init__(self, totals: dict, new_event: Callable[[], Any] | None, prefix: str = "device_") -> None:
        self.totals, self.new_event, self.prefix = totals, new_event, prefix
        self.marks: deque[tuple[str, Any]] = deque()

    @staticmethod
    def cuda_event() -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def enter(self, phase: str) -> None:
        if self.new_event is None or (self.marks and self.marks[-1][0] == phase):
            return
        self.marks.append((phase, self.new_event()))
        self._fold(wait=False)

    def _fold(self, wait: bool) -> None:
        while len(self.marks) >= 2 and (wait or self.marks[1][1].query()):
            phase, start = self.marks.popleft()
            end = self.marks[0][1]
            end.synchronize()
            key = f"{self.prefix}{phase}_s"
            self.totals[key] = self.totals.get(key, 0.0) + start.elapsed_time(end) / 1000

    def close(self) -> None:
        self.enter("end")
        self._fold(wait=True)
        self.marks.clear()


class _Later:
    """A job's result (a ``_Readback`` handle), once ``_Beside`` has run the job."""

    def __init__(self, beside: _Beside) -> None:
        self.beside = beside
        self.handle: tuple[torch.Tensor, Any] | None = None

    def ready(self) -> bool:
        return self.handle is not None and _Readback.ready(self.handle)

    def get(self) -> torch.Tensor:
        if self.handle is None:
            self.beside.catch_up()
        assert self.handle is not None
        return _Readback.get(self.handle)


class _Beside:
    """Where a pack's tests and outputs run. On a GPU with ``PackOptions.beside``, on a second stream:
    their small kernels (a test is ~40 of them on one image) then fill the device's gaps beside
    the training, where on the training stream they queue between its steps. Otherwise in line.

    A job reads only its own copies (``_Pack.snapshot``), tensors that never change (the pack's
    kernel) and the pack's probe network, which jobs alone use, one after another. The training
    stream never waits for a job; the host does, when it reads a result.

    ``lag`` is for tests on a CPU, where work is done as it is issued: each job then runs that
    many steps late, so a job that read the pack's live state instead of its copies would read
    later weights or the next image placed in its slot, and fail them.
    """

    lag = 0

    def __init__(self, device: torch.device, on: bool, stats: dict | None) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if on and device.type == "cuda" else None
        self.clock = None  # the second stream's own seconds per phase, for a caller who reads stats
        if self.stream is not None and stats is not None:
            self.clock = _DeviceClock(stats, _DeviceClock.cuda_event, "device_beside_")
        self.waiting: deque[tuple[int, Callable[[], Any], _Later]] = deque()  # lagging jobs, by step due
        self.step = 0

    def keep(self, *tensors: torch.Tensor | None) -> None:
        """Tensors jobs read for the pack's life: their memory is not reused while a job may still run."""
        if self.stream is not None:
            for t in tensors:
                if t is not None:
                    t.record_stream(self.stream)

    def run(self, phase: str, job: Callable[[], Any], *copies: torch.Tensor) -> _Later:
        """Run ``job`` (it returns a readback handle) after the work issued so far, reading ``copies``."""
        later = _Later(self)
        if self.stream is None:
            if self.lag:
                self.waiting.append((self.step + self.lag, job, later))
            else:
                later.handle = job()
            return later
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the copies are made
        self.keep(*copies)  # freed by the host now, but not reused before the job has run
        with torch.cuda.stream(self.stream):
            if self.clock is not None:
                self.clock.enter(phase)
            later.handle = job()
            if self.clock is not None:
                self.clock.enter("idle")
        return later

    def advance(self, step: int) -> None:
        """The pack's step count is now ``step``: run the lagging jobs due by then."""
        self.step = step
        self._run_due(step)

    def catch_up(self) -> None:
        """Run every lagging job now (a result is wanted)."""
        self._run_due(math.inf)

    def _run_due(self, by: float) -> None:
        while self.waiting and self.waiting[0][0] <= by:
            _, job, later = self.waiting.popleft()
            later.handle = job()

    def close(self) -> None:
        if self.clock is not None:
            assert self.stream is not None
            with torch.cuda.stream(self.stream):
                self.clock.close()


def _layers(row: torch.Tensor, like: ZSSRNet) -> Iterator[torch.Tensor]:
    """One slot's flat row of weights (on any device) as views shaped like ``like``'s layers, in
    order, as ``PackedNets`` lays them out."""
    at = 0
    for conv in like.convs:
        n = conv.weight.numel()
        yield row[at:at + n].view_as(conv.weight)
        at += n


def _probe_of(probe: ZSSRNet, row: torch.Tensor) -> ZSSRNet:
    """``probe`` with one slot's weights, from its flat row."""
    with torch.no_grad():
        for conv, w in zip(probe.convs, _layers(row, probe)):
            conv.weight.copy_(w)
    return probe


def _test_job(probe: ZSSRNet, row: torch.Tensor, image: torch.Tensor, sf: tuple[float, float],
              kernel: torch.Tensor | None, noise: torch.Tensor | None, plan: MemoryPlan,
              readback: _Readback) -> tuple[torch.Tensor, Any]:
    return readback.push(reconstruction_error(_probe_of(probe, row), image, sf, kernel, noise, plan))


def _output_job(probe: ZSSRNet, row: torch.Tensor, image: torch.Tensor, cfg: FitConfig,
                kernel: torch.Tensor | None, plan: MemoryPlan, readback: _Readback) -> tuple[torch.Tensor, Any]:
    out, _ = upscale_with(_probe_of(probe, row), image, cfg, 0, kernel, plan)
    return readback.push(out)


@dataclass
class _Slot:
    job: Job
    gen: torch.Generator
    draw: Draw
    sched: Schedule
    aug: Augment
    first_step: int  # the pack's step count when this image started
    started: float
    column: int  # its column in the loss history
    hw: tuple[int, int] = (0, 0)
    rate: float = -1.0  # the learning rate last set on the device
    it: int = 0
    tests: list = field(default_factory=list)  # (step, _Later) not yet given to the schedule
    log: FitLog = field(default_factory=FitLog)

    def resolve_tests(self) -> None:
        for it, later in self.tests:
            self.sched.add_test(it, float(later.get()))
            self.log.test_steps.append(it)
            self.log.rec_mse.append(self.sched.rec[-1])
        self.tests.clear()


@dataclass
class _Finished:
    key: Any
    column: int
    log: FitLog
    steps: range  # the pack steps this image trained in
    fit_seconds: float
    finished_at: float
    output: _Later
    weights: tuple  # readback handle of the slot's flat row of weights


def full_pack(cfg: FitConfig, device: torch.device | str, k: int, options: PackOptions = PackOptions(),
              image: torch.Tensor | None = None) -> tuple[_Pack, list[int]]:
    """A pack of ``k`` live fits of ``image`` (default: random, a little over the crop), ready to step:
    what probes and profiles time."""
    img = image if image is not None else torch.rand(3, cfg.crop + 32, cfg.crop + 32)
    pack = _Pack(k, Job(None, img, cfg), torch.device(device), options)
    for i in range(k):  # fathers as a pack starts with them: the top-left crop, unwarped (identity maps)
        pack.place(i, Job(i, img, cfg), torch.Generator().manual_seed(i))
    return pack, list(range(k))


def fit_packed(jobs: Iterable[Job], k: int, device: torch.device | str = "cpu", plan: MemoryPlan = MemoryPlan(),
               options: PackOptions = PackOptions(), stats: dict | None = None,
               stop: Callable[[], bool] | None = None) -> Iterator[tuple[Any, SRResult]]:
    """Fit every job, K at a time in one pack; yields (key, result) as each image's output reaches the host.

    ``jobs`` may yield None: no job ready yet (an image still decoding). The pack then trains
    the slots it has and offers the empty ones a job again at the next step, instead of
    waiting; with no slot live it waits for a job.
    ``fit_seconds`` of a result is the image's wall time in the pack (K images
    shared it, as they share the device). ``stats``, if given, receives counts
    (pack steps, graph replays, compactions, whether recording failed, slot-steps
    computed and how many of them trained a live image), the host's seconds per
    phase and, on a GPU, the device's (``_DeviceClock``, off without ``stats``),
    for benchmarks. ``stop``, checked every step, abandons the pack when it
    returns True (a cancelled call): the images in it get no result.
    """
    timed = stats is not None  # the device clock's events only for a caller who reads them
    stats = {} if stats is None else stats
    stats.update(steps=0, replays=0, compactions=0, slot_steps=0, live_slot_steps=0, graph_failed=False,
                 host_draw_s=0.0, host_step_s=0.0,
                 host_book_s=0.0, host_test_s=0.0, host_finish_s=0.0, host_wait_s=0.0)
    device = torch.device(device)
    pending = iter(jobs)
    pack: _Pack | None = None
    history: _LossHistory | None = None
    sig = None
    slots: list[_Slot | None] = [None] * k
    exhausted = False
    step = 0
    upcoming = 0  # the pack step a slot filled now trains first
    readback = _Readback(device)
    finished: deque[_Finished] = deque()
    clock = time.perf_counter
    device_clock = _DeviceClock(stats, _DeviceClock.cuda_event if timed and device.type == "cuda" else None)
    beside = _Beside(device, options.beside, stats if timed else None)

    def fill(slot: int) -> Iterator[tuple[Any, SRResult]]:
        """Put the next packable job into ``slot``; jobs that cannot share the pack are fitted alone.
        A source with no job ready yet (None) leaves the slot empty until the next step."""
        nonlocal pack, history, sig, exhausted, dry
        while not exhausted and not dry:
            try:
                job = next(pending)
            except StopIteration:
                exhausted = True
                return
            if job is None:
                dry = True
                return
            s = signature(job)
            if s is None or (sig is not None and s != sig):
                device_clock.enter("alone")
                yield job.key, super_resolve(job.image, job.cfg, device, job.kernel, plan=plan)
                continue
            if pack is None:
                sig, pack = s, _Pack(k, job, device, options)
                history = _LossHistory(k, device, readback)
                beside.keep(*pack.probe.parameters(), pack.kernel)
            gen = torch.Generator().manual_seed(job.cfg.seed)
            device_clock.enter("fill")
            pack.place(slot, job, gen)
            slots[slot] = _Slot(job, gen, Draw(gen), Schedule(job.cfg), augment_of(job.cfg),
                                first_step=upcoming, started=clock(), column=pack.columns[slot],
                                hw=tuple(job.image.shape[-2:]))
            return

    def result(done: _Finished) -> SRResult:
        t0 = clock()
        assert history is not None
        done.log.loss.extend(history.losses(done.column, done.steps))
        out = done.output.get()
        assert pack is not None  # (whose probe has the layers' shapes)
        # each its own tensor: safetensors refuses to save views of one storage
        state = {f"convs.{n}.weight": w.clone() for n, w in enumerate(_layers(_Readback.get(done.weights), pack.probe))}
        stats["host_wait_s"] += clock() - t0
        return SRResult(out, done.log, done.fit_seconds, clock() - done.finished_at, state)

    def landed(wait: bool = False) -> Iterator[tuple[Any, SRResult]]:
        """The finished images whose outputs have reached the host, in order (``wait``: all of them)."""
        while finished and (wait or finished[0].output.ready()):
            done = finished.popleft()
            yield done.key, result(done)

    dry = False  # the source said it had no job ready (None), this step
    while True:
        if stop is not None and stop():
            return
        upcoming = step
        dry = False
        for i in range(len(slots)):  # a step's empty slots, first all of them: offer each a job
            if slots[i] is None and not exhausted and not dry:
                yield from fill(i)
        live = [i for i, s in enumerate(slots) if s is not None]
        if not live:
            if exhausted:
                break
            # Nothing to train until the source has a job ready (its images are still decoding):
            # meanwhile the finished images' results still go out.
            beside.catch_up()
            yield from landed()
            time.sleep(0.002)
            continue
        assert pack is not None and history is not None
        if pack.use_graphs and exhausted and len(live) <= pack.k * options.compact_below:
            # A draining pack: keep the recorded step (nearly) free of empty slots.
            size = next((n for n in COMPACT_SIZES if n >= len(live)), len(live))
            if size < pack.k:
                keep = sorted(live + [i for i, s in enumerate(slots) if s is None][: size - len(live)])
                device_clock.enter("compact")
                pack.compact(keep)
                history.regroup(pack.columns)
                slots[:] = [slots[i] for i in keep]
                live = [i for i, s in enumerate(slots) if s is not None]
                stats["compactions"] += 1
        t0 = clock()
        k_now = pack.k
        params = np.zeros((k_now, 10))
        matrices = np.tile(np.eye(3), (k_now, 1, 1))
        noise = torch.zeros(k_now, *pack.son_shape) if pack.noise is not None else None
        for i in live:
            s = slots[i]
            rate = s.sched.rate(s.it)
            if rate != s.rate:
                pack.set_rate(i, rate)
                s.rate = rate
            _, matrices[i], _, exact = draw_father([s.hw], [(1.0, 1.0), pack.sf], s.aug, s.draw)
            params[i, 9] = exact
            if noise is not None and s.job.cfg.noise_std > 0:  # drawn where make_son draws it, from the same stream
                noise[i] = son_noise(pack.son_shape, s.job.cfg.noise_std, s.gen)
        params[:, :9] = np.linalg.inv(matrices).reshape(k_now, 9)
        t1 = clock()
        pack.send_draws(params, noise)  # before a recording, whose warm-up steps then compute this step's pairs
        if pack.needs_recording():
            device_clock.enter("record")
            pack.record()
        device_clock.enter("train")
        history.record(pack.step(live))
        t2 = clock()
        stats["host_draw_s"] += t1 - t0
        stats["host_step_s"] += t2 - t1
        stats["steps"] += 1
        stats["replays"] += pack.graph is not None
        stats["slot_steps"] += pack.k if pack.graph is not None or len(live) == pack.k else len(live)  # computed
        stats["live_slot_steps"] += len(live)  # of which a live image's step
        upcoming = step + 1
        for i in live:
            s = slots[i]
            cfg = s.job.cfg
            s.log.lr.append(s.rate)
            s.log.scale_step.append(0)
            if s.sched.wants_test(s.it):
                t3 = clock()
                device_clock.enter("test")
                row, img = pack.snapshot(i, s.hw)
                # drawn now: at its turn in the image's stream
                drawn = reconstruction_noise(img.shape, pack.sf, cfg.noise_std, s.gen)
                job = functools.partial(_test_job, pack.probe, row, img, pack.sf, pack.kernel, drawn, plan, readback)
                s.tests.append((s.it, beside.run("test", job, row, img)))
                stats["host_test_s"] += clock() - t3
            if s.sched.check_due(s.it):
                t3 = clock()
                s.resolve_tests()  # ran >= 9 steps ago with the defaults: no stall
                stats["host_wait_s"] += clock() - t3
            if s.sched.after_step(s.it):
                s.log.lr_changes.append(s.it)
            s.it += 1
            if s.sched.finished or s.it >= cfg.max_iters:
                t3 = clock()
                device_clock.enter("finish")
                s.resolve_tests()
                history.flush()  # its last losses travel ahead of its output
                row, img = pack.snapshot(i, s.hw)
                job = functools.partial(_output_job, pack.probe, row, img, cfg, pack.kernel, plan, readback)
                out = beside.run("finish", job, row, img)
                pack.active[i] = False
                now = clock()
                finished.append(_Finished(s.job.key, s.column, s.log, range(s.first_step, step + 1),
                                          now - s.started, now, out, readback.push(row)))
                slots[i] = None
                stats["host_finish_s"] += now - t3
                yield from fill(i)
        stats["host_book_s"] += clock() - t2
        step += 1
        beside.advance(step)
        yield from landed()
        if step % 64 == 0:  # forget the losses no image still needs
            history.forget(min([s.first_step for s in slots if s is not None] + [f.steps.start for f in finished]
                               + [step]))
    device_clock.close()
    beside.close()
    stats["graph_failed"] = pack is not None and options.graphs and _can_record(device) and not pack.use_graphs
    yield from landed(wait=True)
