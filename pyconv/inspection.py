"""``inspect``: what a checkpoint holds, read from headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sources import open_checkpoint


def inspect(path: str | Path) -> dict[str, Any]:
    """Tensors (dtype, shape, bytes, file), totals per dtype, metadata and config of a file or folder."""
    ck = open_checkpoint(path)
    return {
        "path": str(ck.path),
        "kind": ck.kind,
        "files": [str(f) for f in ck.files],
        "metadata": ck.metadata,
        "config": ck.config,
        "extra": {k: v for k, v in ck.extra.items() if isinstance(v, (str, int, float, bool, list, dict))},
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
            }
            for t in ck.tensors.values()
        ],
    }
