"""Device values brought to the host without the host waiting for the device: ``Readback``, and
the pack's loss history, kept on the device and brought back a chunk at a time."""

from __future__ import annotations

from typing import Any

import torch


class Readback:
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


class LossHistory:
    """Every slot's loss at every step, kept on the device and brought back a chunk at a time.

    Rows are pack positions; ``columns`` names the slot at each position (a slot's
    column is its position before any ``compact``), so a slot's curve survives
    the pack shrinking under it.
    """

    def __init__(self, k: int, device: torch.device, readback: Readback, chunk: int = 64) -> None:
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
                out.extend(Readback.get(handle)[lo - start:hi - start, pos[column]].tolist())
        return out

    def forget(self, before: int) -> None:
        self.chunks = [c for c in self.chunks if c[0] + c[1] > before]
