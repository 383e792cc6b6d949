"""Scratch disk for shard logits: a slot per parallel shard job, and a sampler of how much a folder holds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path

# --- scratch: a slot per shard alive at once, and a sampler of its size ------------------------------------------


@contextlib.contextmanager
def scratch_slot(root: Path, parallel: int, poll_s: float = 2.0):
    """Hold one of `parallel` slots in root (a file lock each), so at most `parallel` shard jobs keep logits in
    this scratch folder at once, whatever the scheduler starts. Yields the slot number."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(parallel):
            fd = os.open(root / f".ggufbench-kld-slot-{i}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield i
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll_s)


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


class FolderSampler:
    """Peak size of a folder, sampled in a background thread while the block runs (and once at its end)."""

    def __init__(self, path: Path, interval_s: float = 0.1):
        self.path, self.interval_s = Path(path), interval_s
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, folder_bytes(self.path))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> FolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # what the block wrote after the last sample counts too
