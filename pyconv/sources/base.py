"""What every source reader produces: tensors as byte segments of files, never loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Segment:
    """Bytes ``[offset, offset + nbytes)`` of ``path``."""

    path: Path
    offset: int
    nbytes: int


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

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(s.path for s in self.segments))


@dataclass
class Checkpoint:
    """A source opened for conversion: its tensors in source order plus the small things around them."""

    kind: str                                   # "safetensors", "torch", "zero", "gguf", ...
    path: Path                                  # what the user named
    tensors: dict[str, SourceTensor]
    files: list[Path]                           # every weight file read
    metadata: dict[str, str] = field(default_factory=dict)   # e.g. safetensors __metadata__
    config: dict[str, Any] | None = None        # config.json when there is one
    extra: dict[str, Any] = field(default_factory=dict)      # reader-specific facts (GGUF KVs, ...)
    # where config.json and the tokenizer are when not beside the weights (a ZeRO tag folder's parent)
    side_folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The folder of the small files around the weights: config, tokenizer, generation config."""
        if self.side_folder is not None:
            return self.side_folder
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def tensor_bytes_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.dtype] = out.get(t.dtype, 0) + t.nbytes
        return out
