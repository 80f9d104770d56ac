"""What the pack tests share: small images, a small pack of networks, and an eager stand-in for
recording the step as a CUDA graph."""

from __future__ import annotations

import torch

from conftest import have_data, hr_path
from zssr_batch.files.images import load_image
from zssr_batch.pack.nets import PackedNets


def crops() -> list[torch.Tensor]:
    """Three small images of different shapes: crops of Set5's baby where the data is here, else noise."""
    if have_data():
        img = torch.from_numpy(load_image(hr_path("Set5", "baby")).color)
        return [img[:, 40:70, 50:84], img[:, 200:240, 100:128], img[:, 300:336, 300:336]]
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(3, 30, 34, generator=gen), torch.rand(3, 40, 28, generator=gen),
            torch.rand(3, 36, 36, generator=gen)]


def small_pack() -> tuple[PackedNets, torch.Tensor, torch.Tensor, torch.Generator]:
    """Three small networks drawn from a fixed stream, and an input for two of them (slots 2 and 0)."""
    gen = torch.Generator().manual_seed(2)
    nets = PackedNets(3, 3, 4, 8)
    for s in range(3):
        nets.init_slot(s, 0.5, gen)
    return nets, torch.rand(2, 3, 20, 18, generator=gen), torch.tensor([2, 0]), gen


def record_eagerly(monkeypatch) -> None:
    """On a GPU the step is a recorded graph over every position; finished positions ride along
    masked. Here only the capture itself has an eager stand-in: the recording's warm-up steps run
    as they do on a GPU (no slot active, every position computed), the capture runs the step once
    more, and each replay runs that same full-pack step, so a draining pack's bookkeeping, and
    that recording changes no slot, are checked on a CPU."""
    from zssr_batch.pack import device

    class Replay:
        def __init__(self, step, rows):
            self.step, self.rows = step, rows

        def replay(self):
            self.rows.copy_(self.step())

    def capture(step, on):
        rows = step()
        return Replay(step, rows), rows

    monkeypatch.setattr(device, "_capture", capture)
    monkeypatch.setattr(device, "_can_record", lambda on: True)
