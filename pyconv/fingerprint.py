"""sha256 fingerprints of inputs and outputs, read through the page cache in large blocks."""

from __future__ import annotations

import hashlib
import os
import threading
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


class FollowingHasher:
    """sha256 of files while the engine writes them: a thread reads each file in order, only as far
    as the engine reports it written without holes, so fingerprinting overlaps the conversion
    instead of reading the output again afterwards. The engine creates every file at its final
    size before it reports progress, so a file is done when its written prefix reaches its size."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self._limits = [0] * len(paths)
        self._final = False    # the engine has finished: every file is complete
        self._aborted = False
        self._cond = threading.Condition()
        self._digests: list[str] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pyconv-fingerprint", daemon=True)
        self._thread.start()

    def advance(self, prefixes: list[int]) -> None:
        with self._cond:
            self._limits = list(prefixes)
            self._cond.notify()

    def result(self) -> dict[Path, str]:
        """Digests of the complete files; call once the engine has finished writing them."""
        self._end(aborted=False)
        if self._error is not None:
            raise self._error
        return dict(zip(self.paths, self._digests))

    def stop(self) -> None:
        self._end(aborted=True)

    def _end(self, *, aborted: bool) -> None:
        with self._cond:
            self._final, self._aborted = True, aborted
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        try:
            for i in range(len(self.paths)):
                if not self._wait(i, 0):
                    return
                self._digests.append(self._hash(i))
        except BaseException as e:  # handed to the caller by result()
            self._error = e

    def _wait(self, i: int, at: int) -> bool:
        """Block until file ``i`` is written past ``at`` or the run ended; False if aborted."""
        with self._cond:
            while not self._final and self._limits[i] <= at:
                self._cond.wait()
            return not self._aborted

    def _hash(self, i: int) -> str:
        h = hashlib.sha256()
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        with self.paths[i].open("rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            at = 0
            while at < size:
                if not self._wait(i, at):
                    return ""
                with self._cond:
                    end = size if self._final else min(size, self._limits[i])
                while at < end:
                    n = os.preadv(f.fileno(), [view[: min(BLOCK, end - at)]], at)
                    if n <= 0:
                        raise OSError(f"{self.paths[i]}: short read while fingerprinting")
                    h.update(view[:n])
                    at += n
        return h.hexdigest()
