"""``inspect``: what a checkpoint holds, read from headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compression import opened
from .options import ConvertOptions
from .sources.checkpoint import Checkpoint


def _plain(value: Any) -> Any:
    """JSON-friendly form of what a reader found beside the tensors; long arrays (GGUF vocabularies) become their length."""
    if hasattr(value, "type") and hasattr(value, "value"):  # a GGUF key's typed value
        value = value.value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if len(value) <= 16 else f"[{len(value)} items]"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def inspect(path: str | Path, source_format: str | None = None) -> dict[str, Any]:
    """Tensors (dtype, shape, bytes, file), totals per dtype, metadata and config of a file or folder (a .zst
    file is decompressed into the system's temporary folder first); ``source_format`` names the reader of a
    folder holding more than one kind of checkpoint, as ``--source`` does."""
    with opened(Path(path), ConvertOptions.of(source_format=source_format)) as ck:
        return _described(ck)


def _described(ck: Checkpoint) -> dict[str, Any]:
    return {
        "path": str(ck.path),
        "kind": ck.format_name,
        "files": [str(f) for f in ck.files],
        "metadata": ck.metadata,
        "config": ck.config,
        "extra": _plain(ck.details()),
        "tensor_count": len(ck.tensors),
        "total_bytes": ck.nbytes,
        "bytes_by_dtype": ck.tensor_bytes_by_dtype(),
        "tensors": [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "bytes": t.nbytes,
                "files": [str(f) for f in t.files],
                # a pre-quantized weight: the scale its codes are multiplied by, and the block of each scale
                "scale": {"tensor": t.scale.tensor.name, "block": list(t.scale.block), "values": t.scale.value_dtype}
                if t.scale is not None else None,
            }
            for t in ck.tensors.values()
        ],
    }
