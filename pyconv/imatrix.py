"""Importance matrices from llama-imatrix: the GGUF file it writes today and the legacy ``.dat``.

Each entry holds, per matrix of a GGUF tensor (per expert of a stacked one), the mean square of
the activations each column met; llama-quantize weighs a block's rounding error by them. The
values are normalised as llama-quantize normalises them (sums over counts), and it records the
file, dataset, entry and chunk counts in ``quantize.imatrix.*`` keys, which pyconv writes too.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .errors import ConversionError

SUMS, COUNTS = ".in_sum2", ".counts"
# llama-quantize keeps at most 127 bytes of a string it records
KV_STRING_BYTES = 127


@dataclass
class Imatrix:
    path: str                    # as given: the recorded quantize.imatrix.file
    rows: dict[str, np.ndarray]  # GGUF tensor name -> float32 values, one row of columns per matrix
    datasets: list[str]
    chunks: int

    def importance(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The rows for a tensor of ``shape`` (rows last), or None for a token embedding the
        imatrix has no fitting rows for (llama-imatrix sees no product with it, and llama-quantize
        quantizes it without); anything else that does not fit is an error naming the tensor."""
        values = self.rows.get(name)
        want = shape[-1] * math.prod(shape[:-2])
        if values is not None and values.size == want:
            return values
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None
        if values is None:
            raise ConversionError(f"the imatrix {self.path} has no entry for it", tensor=name)
        raise ConversionError(f"the imatrix {self.path} has {values.size} values for it, which needs {want}", tensor=name)

    def kvs(self) -> list[tuple[str, int, Any]]:
        """The keys llama-quantize records, as its KV overrides write them."""
        string, u32 = int(gguf.GGUFValueType.STRING), int(gguf.GGUFValueType.UINT32)
        out: list[tuple[str, int, Any]] = [("quantize.imatrix.file", string, clip(self.path))]
        if self.datasets:
            out.append(("quantize.imatrix.dataset", string, clip(self.datasets[0])))
        out.append(("quantize.imatrix.entries_count", u32, len(self.rows)))
        if self.chunks > 0:
            out.append(("quantize.imatrix.chunks_count", u32, self.chunks))
        return out


def clip(text: str) -> str:
    return text.encode()[:KV_STRING_BYTES].decode("utf-8", "ignore")


def load(path: str) -> Imatrix:
    """The imatrix at ``path``, GGUF or legacy; a file that is neither is an error naming it."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ConversionError(f"cannot read the imatrix: {e.strerror}", file=p) from None
    return load_gguf(path) if head == b"GGUF" else load_legacy(path)


def load_gguf(path: str) -> Imatrix:
    reader = gguf.GGUFReader(path)
    field = reader.fields.get("imatrix.datasets")
    datasets = [str(v) for v in field.contents()] if field is not None else []
    chunk_field = reader.fields.get("imatrix.chunk_count")
    if field is None or chunk_field is None or "imatrix.chunk_size" not in reader.fields:
        raise ConversionError("not an imatrix: llama-imatrix's imatrix.* keys are missing", file=path)
    tensors = {t.name: t for t in reader.tensors}
    rows: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        if not name.endswith(SUMS):
            continue
        base = name.removesuffix(SUMS)
        counts = tensors.get(base + COUNTS)
        if counts is None or t.tensor_type != gguf.GGMLQuantizationType.F32 or counts.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ConversionError(f"the imatrix entry {base} needs f32 {SUMS} and {COUNTS} tensors", file=path)
        sums = np.asarray(t.data, dtype=np.float32).reshape(-1)
        n = np.rint(np.asarray(counts.data, dtype=np.float32).reshape(-1)).astype(np.float32)
        per = sums.reshape(n.size, -1)
        # a matrix no token reached gets weight 1 everywhere, as llama-quantize gives it
        safe = np.where(n > 0, n, 1)[:, None]
        rows[base] = np.where(n[:, None] > 0, per / safe, np.float32(1)).astype(np.float32).reshape(-1)
    if not rows:
        raise ConversionError("the imatrix holds no entries", file=path)
    return Imatrix(path, rows, datasets, int(chunk_field.contents()))


def load_legacy(path: str) -> Imatrix:
    """The ``.dat`` layout: entry count, then per entry its name, call count and sums; then,
    optionally, the chunk count and the dataset's name (all little-endian int32 / float32)."""
    data = Path(path).read_bytes()
    at = 0

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise ConversionError("not an imatrix (neither GGUF nor a complete legacy .dat)", file=path)
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ConversionError("not an imatrix (neither GGUF nor a legacy .dat with entries)", file=path)
    rows: dict[str, np.ndarray] = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        name = bytes(take(f"<{max(length, 0)}s")[0]).decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ConversionError(f"the imatrix entry {name} has no values", file=path)
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=at) if at + 4 * nval <= len(data) else None
        if sums is None:
            raise ConversionError(f"the imatrix entry {name} is cut short", file=path)
        at += 4 * nval
        rows[name] = (sums / np.float32(ncall) if ncall > 0 else sums).astype(np.float32)
    chunks, datasets = 0, []
    if at + 4 <= len(data):
        (chunks,) = take("<i")
        if at + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and at + length <= len(data):
                datasets.append(data[at:at + length].decode("utf-8", "replace"))
    return Imatrix(path, rows, datasets, chunks)
