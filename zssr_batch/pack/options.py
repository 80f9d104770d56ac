"""How a pack runs on a device (``PackOptions``), and the sizes a draining pack shrinks to.

The figures behind each default (card, figure, date) are in docs/BENCHMARKS.md, "Why the pack's defaults are what
they are"; the comments here give the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackOptions:
    """How a pack runs on a GPU; a CPU always runs float32 eagerly (what measures best there)."""

    graphs: bool = True  # record the full-pack training step once as a CUDA graph, then replay it
    # bfloat16 networks (float32 master weights and Adam): faster packs for a few hundredths of a dB
    # of mean PSNR-Y; --precision fp32 turns it off.
    bf16: bool = True
    channels_last: bool = True  # NHWC activations: the layout tensor-core convolutions want
    # Let cuDNN time its algorithms for the pack's one training shape (the grouped convolutions are
    # what bounds a pack). Off by default; the pack-size probe turns it on where it measures faster
    # (pack.size.plan_pack).
    tune: bool = False
    # How the K convolutions run: 'grouped' (one grouped cuDNN convolution per layer), 'split' (the
    # same, but weight gradients as batched matrix products: cuDNN's grouped weight gradient can be
    # its slowest kernel), 'triton' (our own implicit-GEMM kernels for the forward, input and weight
    # gradients, ReLUs fused, and a one-kernel Adam) or 'bmm' (im2col and batched products
    # throughout, a benchmark's reference); pack.conv.
    conv: str = "grouped"
    # Pad the 3-channel ends (first layer in, last layer out) to 8 channels a group: tensor-core
    # kernels want multiples of 8, and a direct kernel on 3 channels a group can cost far more than
    # its 1.5% of the FLOPs. The pack-size probe (pack.size.plan_pack) times 'split', 'triton' and
    # 'pad_thin' and keeps what is faster on the card at hand.
    pad_thin: bool = False
    # A draining pack (no job left to fill its empty slots) is compacted once its live slots are
    # at most this fraction of its positions; each compaction records the step again (one eager
    # step and the capture), which costs less than the empty positions it saves from then on, even
    # when it is done often (benchmarks/drain_model.py replays this schedule over measured figures).
    compact_below: float = 0.9
    # Run reconstruction checks and outputs on a second CUDA stream beside the training
    # (``pack.beside``): thousands of checks of ~40 small kernels each in a dataset's run, which on
    # the training stream queue between its steps. Off until a GPU has shown it pays
    # (benchmarks/throughput.py ``:beside``).
    beside: bool = False


# The sizes a draining pack shrinks to (the next one up from its live slots, the rest riding along
# masked), steps of 12-25%: shapes that recur from batch to batch, so that cuDNN's tuning (``tune``),
# which times its algorithms once per new shape, is paid at most 28 times per process rather than
# per drain. benchmarks/drain_model.py puts the cost against exact sizes at under 1%.
COMPACT_SIZES = tuple(range(1, 8)) + tuple(range(8, 16, 2)) + tuple(range(16, 32, 4)) + tuple(range(32, 129, 8))
