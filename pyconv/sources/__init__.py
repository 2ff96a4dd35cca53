"""Source readers. ``open_checkpoint`` picks the reader that recognises a path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConversionError
from ..options import ConvertOptions
from .base import Checkpoint, Segment, SourceTensor


@dataclass(frozen=True)
class Reader:
    name: str
    recognises: Callable[[Path], bool]
    open: Callable[[Path, ConvertOptions], Checkpoint]


def _is_safetensors(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and (any(path.glob("*.safetensors.index.json")) or any(path.glob("*.safetensors")))


def _open_safetensors(path: Path, _opts: ConvertOptions) -> Checkpoint:
    from .safetensors import open_safetensors

    return open_safetensors(path)


READERS: list[Reader] = [Reader("safetensors", _is_safetensors, _open_safetensors)]


def open_checkpoint(path: str | Path, options: ConvertOptions | None = None) -> Checkpoint:
    """Open a checkpoint file or folder with the first reader that recognises it."""
    p = Path(path)
    opts = options or ConvertOptions()
    if not p.exists():
        raise ConversionError("no such file or folder", file=p)
    for reader in READERS:
        if reader.recognises(p):
            return reader.open(p, opts)
    known = ", ".join(r.name for r in READERS)
    raise ConversionError(f"not a checkpoint pyconv can read (readers: {known})", file=p)


__all__ = ["Checkpoint", "Reader", "READERS", "Segment", "SourceTensor", "open_checkpoint"]
