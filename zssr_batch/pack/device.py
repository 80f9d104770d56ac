"""The device side of a pack (``DevicePack``): networks, optimizer and per-slot buffers, the
training step (pairs, forward, backward, Adam) and its CUDA graph, and compaction."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..engine.model import ZSSRNet
from ..engine.pairs import son_shape, upload, warp_batch
from ..engine.resize import imresize, output_size
from ..config import FitConfig
from .conv import CONVS
from .jobs import Job
from .kernels import SlotKernels, step_kernels
from .nets import PackedAdam, PackedNets
from .options import PackOptions


PARAMS = 11  # a father's row of draws: its inverse map (3x3, flattened), an exact flag, its source's index


def source_side(hw: tuple[int, int], cfg: FitConfig) -> int:
    """The side of the square a slot's sources need, for an image of ``hw``: the image's, or in a
    gradual fit its largest output before the last step's."""
    return max(max(output_size(hw, sf)) for sf in ((1.0, 1.0), *cfg.steps[:-1]))


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


class DevicePack:
    """The device side of a pack: networks, optimizer, per-slot buffers, and the recorded step."""

    def __init__(self, k: int, first: Job, device: torch.device, options: PackOptions) -> None:
        cfg = first.cfg
        c = first.image.shape[0]
        self.k, self.device, self.crop = k, device, cfg.crop
        # The scale steps every slot walks (one for a one-jump pack; the jobs' signature fixes them),
        # each slot at its own step; the base scales of a slot's sources, the image's first.
        self.steps: tuple[tuple[float, float], ...] = tuple(cfg.steps)
        self.base_scales = [(1.0, 1.0), *self.steps]
        # A slot's sources of fathers: its image, then its output of every step but the last.
        self.sources = len(self.steps)
        cuda = device.type == "cuda"
        self.can_record = options.graphs and _can_record(device)  # asked for graphs, on a device that has them
        self.use_graphs = self.can_record  # False once a recording has failed
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
        self.slot_net = ZSSRNet(c, cfg.depth, cfg.width).to(device)  # one slot's network, for checks and outputs
        # One slot's network for the outputs of a gradual slot's earlier steps, which its next step
        # trains on: made on the training stream, while checks may use ``slot_net`` beside it.
        self.step_net = ZSSRNet(c, cfg.depth, cfg.width).to(device) if self.sources > 1 else None
        # Each slot's downscaling kernel of each step (its own, or bicubic), written as a slot is filled.
        self.kernels = SlotKernels(k, len(self.steps), device)
        side = source_side(tuple(first.image.shape[-2:]), cfg)
        # (K, sources, C, S, S): each slot's sources in the top-left corners, zeros around
        self.src = torch.zeros(k, self.sources, c, side, side, device=device)
        # Each row a father's draws (``PARAMS``). Rows start as the identity map, not zeros: a
        # recording's warm-up steps compute every row, drawn or not, and a zero map divides by zero. The NaN
        # gradient that makes would reach the resting rows' Adam moments (0 * NaN) (docs/BENCHMARKS.md,
        # "Why the pack's defaults are what they are").
        self.params = torch.zeros(k, PARAMS, dtype=torch.float64, device=device)
        self.params[:, :9] = torch.eye(3, dtype=torch.float64).flatten()
        self.son_shapes = [son_shape((c, self.crop, self.crop), sf) for sf in self.steps]
        # each step's son noise, (K, *son shape); a slot's row is drawn for the step it is at
        self.noise = ([torch.zeros(k, *shape, device=device) for shape in self.son_shapes] if cfg.noise_std > 0
                      else None)
        self.at = torch.zeros(k, dtype=torch.long, device=device)  # each slot's scale step
        self.lr = torch.zeros(k, dtype=torch.float64, device=device)
        self.active = torch.zeros(k, dtype=torch.bool, device=device)
        self.graph: Any = None
        self.graph_rows: torch.Tensor | None = None
        self.recordings = 0
        self._live: tuple[tuple[int, ...], torch.Tensor] | None = None

    def place(self, slot: int, job: Job, gen: torch.Generator) -> list[torch.Tensor | None]:
        """Start ``job`` in ``slot``: fresh weights from its stream, fresh Adam state; its image and its
        kernels on the device. Returns its kernel of each step (``step_kernels``), for its checks and outputs."""
        kernels = step_kernels(job.kernel, self.steps, self.device)
        if self.kernels.place(slot, kernels):  # a new kind of son, or a larger kernel: record again
            self.graph, self.graph_rows = None, None
        self.nets.init_slot(slot, job.cfg.init_variance, gen)
        self.opt.reset(slot)
        img = upload(job.image.to(torch.float32).contiguous(), self.device)
        h, w = img.shape[-2:]
        side = source_side((h, w), job.cfg)
        if side > self.src.shape[-1]:  # a larger image than any so far: grow the buffer, record again
            grown = torch.zeros(*self.src.shape[:3], side, side, device=self.device)
            grown[..., : self.src.shape[-2], : self.src.shape[-1]] = self.src
            self.src, self.graph, self.graph_rows = grown, None, None
        self.src[slot].zero_()
        self.src[slot, 0, :, :h, :w] = img
        self.at[slot] = 0
        self.lr[slot] = job.cfg.learning_rate
        self.active[slot] = True
        return kernels

    def next_step(self, slot: int, step: int, source: torch.Tensor,
                  fresh: tuple[float, torch.Generator] | None) -> None:
        """``slot`` moves on to scale step ``step``, ``source`` (C, H, W: its output of the step before)
        joining its sources. ``fresh`` (init variance, the slot's stream): new weights and Adam state, as
        ``reinit_each_step`` wants; else the weights and Adam state (its step count too) go on, as alone."""
        h, w = source.shape[-2:]
        self.src[slot, step, :, :h, :w] = source
        self.at[slot] = step
        if fresh is not None:
            self.nets.init_slot(slot, fresh[0], fresh[1])
            self.opt.reset(slot)

    def snapshot(self, slot: int, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of ``slot``'s weights (one flat row) and of its image (h, w), taken in stream order:
        what a check or an output reads, untouched by the slot's next steps, by the next image placed
        in it, or by the buffers moving when they grow or the pack compacts."""
        return self.nets.flat[slot].clone(), self.src[slot, 0, :, : hw[0], : hw[1]].clone()

    def set_rate(self, slot: int, rate: float) -> None:
        self.lr[slot] = rate  # a fill on the device; the host does not wait

    def send_draws(self, params: np.ndarray, noise: dict[int, torch.Tensor]) -> None:
        """This step's draws: ``params`` (K, PARAMS) rows, and the son noise of the scale steps that
        live slots are at (step -> (K, *son shape); the other steps' buffers are not read for them)."""
        self.params.copy_(upload(torch.from_numpy(params), self.device))
        if self.noise is not None:
            for step, rows in noise.items():
                self.noise[step].copy_(upload(rows, self.device))

    def _pairs(self, father: torch.Tensor, step: int, pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The network's inputs for ``father`` at scale step ``step``: sons made and upscaled back."""
        sf = self.steps[step]
        son = self.kernels.sons(father, step, sf, pick)
        if self.noise is not None:
            son = son + pick(self.noise[step])
        return imresize(son.clamp(0, 1), sf, (self.crop, self.crop))

    def _train_step(self, live: torch.Tensor | None) -> torch.Tensor:
        pick = (lambda t: t) if live is None else (lambda t: t.index_select(0, live))
        params = pick(self.params)
        inverse, exact = params[:, :9].reshape(-1, 3, 3), params[:, 9] > 0.5
        sources = pick(self.src).flatten(0, 1)  # (N * sources, C, S, S)
        if self.sources == 1:
            father = warp_batch(sources, inverse, exact, self.crop)
            x = self._pairs(father, 0, pick)
        else:
            # Each slot's father from the source it drew: every source of the slot is warped by its map
            # and the drawn one kept, and its inputs made at every step and those of its step kept;
            # pairs are a few percent of a step, and no host data shapes this step, so one recording
            # serves slots at any step.
            n, m = inverse.shape[0], self.sources
            rows = torch.arange(n, device=self.device)
            every = warp_batch(sources, inverse.repeat_interleave(m, 0), exact.repeat_interleave(m), self.crop)
            father = every.unflatten(0, (n, m))[rows, params[:, 10].long()]
            x = torch.stack([self._pairs(father, j, pick) for j in range(len(self.steps))])[pick(self.at), rows]
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

    def graph_failed(self) -> bool:
        """Whether the pack was to record its step as a graph but runs eagerly, its recording having failed."""
        return self.can_record and not self.use_graphs

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
        self.src, self.params, self.at, self.lr, self.active = (
            t.index_select(0, idx) for t in (self.src, self.params, self.at, self.lr, self.active))
        if self.noise is not None:
            self.noise = [t.index_select(0, idx) for t in self.noise]
        self.kernels.keep(idx)
        self.columns = [self.columns[i] for i in keep]


def full_pack(cfg: FitConfig, device: torch.device | str, k: int, options: PackOptions = PackOptions(),
              image: torch.Tensor | None = None) -> tuple[DevicePack, list[int]]:
    """A pack of ``k`` live fits of ``image`` (default: random, a little over the crop), ready to step:
    what probes and profiles time."""
    img = image if image is not None else torch.rand(3, cfg.crop + 32, cfg.crop + 32)
    pack = DevicePack(k, Job(None, img, cfg), torch.device(device), options)
    for i in range(k):  # fathers as a pack starts with them: the top-left crop, unwarped (identity maps)
        pack.place(i, Job(i, img, cfg), torch.Generator().manual_seed(i))
    return pack, list(range(k))
