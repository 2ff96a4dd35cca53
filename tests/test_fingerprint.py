"""The fingerprints' sha256 of files, whole and following a writer, against hashlib over the same bytes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from pyconv.fingerprint import BLOCK, FollowingHasher, sha256_file

# empty, under a page, a page, across the hashing block, several blocks with a ragged end
SIZES = [0, 1, 4095, 4096, BLOCK, BLOCK + 12345, 2 * BLOCK + 7]


@pytest.mark.parametrize("size", SIZES)
def test_sha256_file_equals_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_following_hasher_hashes_files_as_their_prefixes_are_written(tmp_path: Path) -> None:
    # files created at their final size, then written in steps the hasher is told of, as the engine does
    blobs = [os.urandom(BLOCK + 999), os.urandom(5000), b""]
    paths = [tmp_path / f"{i}.bin" for i in range(len(blobs))]
    for p, b in zip(paths, blobs):
        p.write_bytes(bytes(len(b)))
    follower = FollowingHasher(paths)
    written = [0] * len(blobs)
    for i, blob in enumerate(blobs):
        with paths[i].open("r+b") as f:
            for at in range(0, len(blob), 3 << 20):
                f.seek(at)
                f.write(blob[at:at + (3 << 20)])
                f.flush()
                written[i] = min(len(blob), at + (3 << 20))
                follower.advance(list(written))
    assert follower.result() == {p: hashlib.sha256(b).hexdigest() for p, b in zip(paths, blobs)}
    assert not any(t.name == "pyconv-fingerprint" for t in threading.enumerate())
