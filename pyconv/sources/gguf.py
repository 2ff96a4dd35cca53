"""GGUF files (single or llama.cpp split sets) as a source, parsed and bounds-checked here.

Every count, length and offset is checked against the file before it is used, so a lying header
(a tensor count of 2^63, a string longer than the file) ends in one clear error, never in a huge
allocation. Tensors keep their GGUF names and ggml types; the engine dequantizes on the fly.
``gguf_checkpoint`` makes a conversion source of a parsed file.
"""

from __future__ import annotations

import itertools
import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import ConversionError
from .base import Segment, SourceTensor

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF value types: (struct code, size) for scalars
SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
           7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
         7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
STRING, ARRAY = 8, 9

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass
class GgufValue:
    type: int
    value: Any               # str, int, float, bool, list[str], or a numpy array for numeric arrays
    sub_type: int | None = None

    def core_tuple(self, key: str) -> tuple[str, int, Any]:
        """The engine's (key, type, value) form, arrays as (element type, items or packed bytes)."""
        if self.type != ARRAY:
            return (key, self.type, self.value)
        assert self.sub_type is not None
        items = self.value if self.sub_type == STRING else np.asarray(self.value).tobytes()
        return (key, ARRAY, (self.sub_type, items))


class _Reader:
    def __init__(self, path: Path, data: bytes | memoryview | mmap.mmap, size: int) -> None:
        self.path, self.data, self.size, self.pos = path, data, size, 0

    def fail(self, message: str) -> ConversionError:
        return ConversionError(f"{message} (at byte {self.pos})", file=self.path)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"needs {n} more bytes but the file ends")
        view = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, t: int) -> Any:
        fmt, n = SCALARS[t]
        return struct.unpack(fmt, self.take(n))[0]

    def count(self, what: str, min_item_bytes: int) -> int:
        n = self.scalar(10)
        if n * min_item_bytes > self.size - self.pos:
            raise self.fail(f"{what} count {n} cannot fit in the rest of the file")
        return int(n)

    def string(self) -> str:
        n = self.count("string length", 1)
        raw = bytes(self.take(n))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string is not valid UTF-8") from None

    def value(self, t: int) -> GgufValue:
        if t in SCALARS:
            return GgufValue(t, self.scalar(t))
        if t == STRING:
            return GgufValue(t, self.string())
        if t == ARRAY:
            sub = self.scalar(4)
            if sub == STRING:
                n = self.count("array", 8)
                return GgufValue(ARRAY, [self.string() for _ in range(n)], sub)
            if sub not in SCALARS:
                raise self.fail(f"array element type {sub} is not a GGUF scalar type")
            n = self.count("array", SCALARS[sub][1])
            arr = np.frombuffer(self.take(n * SCALARS[sub][1]), dtype=NUMPY[sub]).copy()
            return GgufValue(ARRAY, arr, sub)
        raise self.fail(f"unknown value type {t}")


@dataclass
class GgufFile:
    path: Path
    version: int
    kv: dict[str, GgufValue]
    tensors: dict[str, SourceTensor]
    alignment: int


def read_gguf(path: Path) -> GgufFile:
    size = path.stat().st_size
    if size < 24:
        raise ConversionError(f"not a GGUF file: {size} bytes", file=path)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        r = _Reader(path, mm, size)
        if bytes(r.take(4)) != MAGIC:
            raise ConversionError("not a GGUF file (bad magic)", file=path)
        version = r.scalar(4)
        if version not in (2, 3):
            raise ConversionError(f"GGUF version {version} is not supported (2 and 3 are)", file=path)
        n_tensors = r.count("tensor", 8 + 4 + 4 + 8)
        n_kv = r.count("key-value", 8 + 4)
        kv: dict[str, GgufValue] = {}
        for _ in range(n_kv):
            key = r.string()
            if key in kv:
                raise r.fail(f"key '{key}' appears twice")
            kv[key] = r.value(r.scalar(4))
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in kv:
            alignment = kv["general.alignment"].value
            # any value type can sit under the key: only an integer is an alignment
            if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
                raise r.fail(f"general.alignment {alignment!r} is not a power of two")
        infos = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar(4)
            if not 1 <= n_dims <= MAX_DIMS:
                raise ConversionError(f"has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})", file=path, tensor=name)
            ne = [r.scalar(10) for _ in range(n_dims)]
            type_id, offset = r.scalar(4), r.scalar(10)
            infos.append((name, ne, type_id, offset))
        data_start = (r.pos + alignment - 1) // alignment * alignment
    tensors: dict[str, SourceTensor] = {}
    spans = []
    for name, ne, type_id, offset in infos:
        dtype = dtypes.GGML_NAMES.get(type_id)
        if dtype is None:
            raise ConversionError(f"unknown ggml type {type_id}", file=path, tensor=name)
        if name in tensors:
            raise ConversionError("tensor name appears twice", file=path, tensor=name)
        numel = math.prod(ne)
        if numel > size * 8:  # no ggml type packs more than 8 elements into a byte
            raise ConversionError(f"shape {ne} cannot fit in a {size}-byte file", file=path, tensor=name)
        block = dtypes.block_elems(dtype)
        if ne[0] % block:
            raise ConversionError(f"rows of {ne[0]} elements are not whole {dtype} blocks", file=path, tensor=name)
        nbytes = dtypes.nbytes(dtype, numel)
        if offset % alignment or data_start + offset + nbytes > size:
            raise ConversionError(f"data [{offset}, {offset + nbytes}) is misaligned or past the end of the file", file=path, tensor=name)
        spans.append((offset, offset + nbytes, name))
        tensors[name] = SourceTensor(name, dtype, tuple(reversed(ne)), (Segment(path, data_start + offset, nbytes),))
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise ConversionError(f"data of '{n0}' and '{n1}' overlap", file=path)
    return GgufFile(path, version, kv, tensors, alignment)


def split_set(path: Path) -> list[Path]:
    """All files of a llama.cpp split set given any one of them (or just ``path``)."""
    m = SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count, number = int(m["count"]), int(m["no"])
    if not 1 <= number <= count:
        raise ConversionError(f"the name makes it part {number} of a split set of {count} files", file=path)
    files = [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ConversionError(f"split set is missing {', '.join(missing)}", file=path)
    return files
