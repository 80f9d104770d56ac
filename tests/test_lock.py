"""One writer per output folder: a second run is refused at once, a dead run's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from zssr_batch.run.lock import FolderBusy, FolderLock

HOLD = "import sys, time\nfrom zssr_batch.run.lock import FolderLock\nwith FolderLock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(60)\n"


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=rf"another zssr-batch run is writing here \(pid {proc.pid} on "):
            with FolderLock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with FolderLock(tmp_path):  # the kernel dropped the dead run's lock
        with pytest.raises(FolderBusy):
            with FolderLock(tmp_path):  # and this one holds it now, against a second writer
                pass
    with FolderLock(tmp_path):  # released at the end of a run
        pass
    assert (tmp_path / ".zssr-batch.lock").exists()
