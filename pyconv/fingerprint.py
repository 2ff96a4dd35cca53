"""sha256 fingerprints of inputs and outputs, read through the page cache in large blocks."""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

BLOCK = 16 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])  # hashlib releases the GIL for large updates
    return h.hexdigest()


def hash_in_background(paths: list[Path]) -> Future[dict[Path, str]]:
    """Hash ``paths`` on a worker thread while the engine runs."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyconv-hash")
    future = pool.submit(lambda: {p: sha256_file(p) for p in paths})
    pool.shutdown(wait=False)
    return future
