"""What every source reader produces: tensors as byte segments of files, never loaded, and the few
ways of reading those bytes back that need no engine."""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# bytes compared at a time when two tensors' values are compared through their maps
COMPARE_BYTES = 1 << 22


@dataclass(frozen=True)
class Segment:
    """Bytes ``[offset, offset + nbytes)`` of ``path``."""

    path: Path
    offset: int
    nbytes: int


@dataclass(frozen=True, eq=False)
class Scale:
    """How a pre-quantized tensor's codes become values: each code times the element of ``tensor``
    covering its block, ``block`` elements along each dim (the engine multiplies in f32). The values
    are of type ``value_dtype``, the model's float type."""

    tensor: SourceTensor
    block: tuple[int, ...]
    value_dtype: str


@dataclass(frozen=True, eq=False)
class LowRankUpdate:
    """``factor · (b @ a)`` added to a 2-d tensor's values as the engine reads them (f32): a LoRA
    adapter's pair merged into its base weight, ``b`` [rows, rank] and ``a`` [rank, cols]."""

    a: SourceTensor
    b: SourceTensor
    factor: float


@dataclass(frozen=True, eq=False)
class SourceTensor:
    """A tensor over the bytes of its segments concatenated in order (its storage).

    By default the tensor is the row-major array filling the storage. ``offset`` and ``strides``
    (in elements) describe a view into a larger storage instead, as torch pickles have.
    Identity matters: two SourceTensors are the same source only if they are the same object.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    segments: tuple[Segment, ...]
    offset: int = 0
    strides: tuple[int, ...] | None = None
    scale: Scale | None = None  # set for the codes of a pre-quantized weight
    updates: tuple[LowRankUpdate, ...] = ()  # merged LoRA adapters

    @property
    def value_dtype(self) -> str:
        """The type of the values the tensor holds: its own, or its scale's for codes."""
        return self.scale.value_dtype if self.scale is not None else self.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.segments))


def byte_range(segments: tuple[Segment, ...], start: int, stop: int) -> tuple[Segment, ...]:
    """Bytes [start, stop) of the concatenation of ``segments``."""
    out, at = [], 0
    for s in segments:
        lo, hi = max(start, at), min(stop, at + s.nbytes)
        if lo < hi:
            out.append(Segment(s.path, s.offset + lo - at, hi - lo))
        at += s.nbytes
    return tuple(out)


def same_values(a: SourceTensor, b: SourceTensor) -> bool:
    """Whether two tensors hold the same bytes, compared through the maps a chunk at a time."""
    if (a.dtype, a.shape, a.strides, a.offset) != (b.dtype, b.shape, b.strides, b.offset) or a.nbytes != b.nbytes:
        return False
    if a.segments == b.segments:
        return True

    def chunks(t: SourceTensor) -> Iterator[bytes]:
        for seg in t.segments:
            with seg.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                for at in range(seg.offset, seg.offset + seg.nbytes, COMPARE_BYTES):
                    yield m[at:min(at + COMPARE_BYTES, seg.offset + seg.nbytes)]

    left, right = b"", b""
    ours, theirs = chunks(a), chunks(b)
    while True:
        if not left:
            left = next(ours, b"")
        if not right:
            right = next(theirs, b"")
        if not left and not right:
            return True
        n = min(len(left), len(right))
        if n == 0 or left[:n] != right[:n]:
            return False
        left, right = left[n:], right[n:]
