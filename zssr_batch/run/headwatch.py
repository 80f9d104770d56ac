"""Noticing that the Ray head is gone, before Ray ends the driver for us.

When the head's GCS stops answering, every Ray call of the driver blocks, and after 60 s Ray's
core worker ends the process itself ("Failed to connect to GCS within 60 seconds"): exit 1, no
summary, no run.json, a minute of silence (measured with Ray 2.60, a ``ray start`` head whose
gcs_server was killed). ``HeadWatch`` probes the GCS's port from a thread of its own; after
``LOST_AFTER_S`` with no answer it hands over to ``on_lost``, which ends the run with its own
line and exit code while the main thread may still be blocked inside Ray.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

# How long the GCS may not answer before the head counts as lost (``--head-timeout``): long enough
# for a GCS that restarts (fault-tolerant heads come back within seconds), well inside Ray's own 60 s.
LOST_AFTER_S = 15.0
PROBE_EVERY_S = 1.0


def gcs_answers(address: str, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection at the GCS's ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class HeadWatch:
    """A daemon thread that calls ``on_lost(why)`` once, when the GCS at ``address`` has not
    answered for ``lost_after`` seconds; leaving the ``with`` ends the watch (the run is over).
    No address (a run that needs no Ray): no watch."""

    def __init__(self, address: str | None, on_lost: Callable[[str], None], lost_after: float = LOST_AFTER_S) -> None:
        self.address, self.on_lost, self.lost_after = address, on_lost, lost_after
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="zssr-headwatch", daemon=True)

    def __enter__(self) -> "HeadWatch":
        if self.address:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()

    def _watch(self) -> None:
        last_answer = time.monotonic()
        while not self.done.wait(PROBE_EVERY_S):
            if gcs_answers(self.address):
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer >= self.lost_after and not self.done.is_set():
                self.on_lost(f"lost the Ray head: its GCS at {self.address} has not answered for "
                             f"{self.lost_after:.0f} s")
                return
