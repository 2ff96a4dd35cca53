"""Quantize arrays into the ggml block types pyconv writes, and decode every type it reads.

``quantize`` returns a tensor's data exactly as a GGUF file stores it and ``dequantize`` turns such
data back into float32, both with the C++ kernels the engine runs. ``describe_difference`` says
where two encodings of a tensor differ, block by block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _core, dtypes
from .errors import ConversionError

Buffer = bytes | bytearray | memoryview | np.ndarray


def _type(dtype: str, api: str) -> _core.TypeInfo:
    try:
        return dtypes.row(dtype.lower())
    except KeyError:
        raise ConversionError(f"[{api}] unknown type {dtype!r}") from None


def _check_shape(t: _core.TypeInfo, shape: tuple[int, ...], api: str) -> None:
    if not shape:
        raise ConversionError(f"[{api}] {t.name} needs at least one dimension, got a scalar")
    if t.dims and len(shape) != t.dims:
        raise ConversionError(f"[{api}] {t.name} needs a {t.dims}-d tensor, got shape {shape}")
    if shape[-1] % t.row_elems != 0:
        raise ConversionError(f"[{api}] rows of {shape[-1]} elements do not fit {t.name} blocks of {t.row_elems}")


def quantize(array: ArrayLike, dtype: str, *, importance: ArrayLike | None = None) -> bytes:
    """The data of a tensor stored as ``dtype``, byte for byte as in a GGUF file: blocks along the
    last dimension, then the type's per-tensor tail (I2_S: its f32 scale, the largest |x|, and 28
    zero bytes). The values are taken as float32.

    Types: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs (the bytes
    llama.cpp's ``ggml_quantize_chunk`` writes), tq1_0, tq2_0 and i2_s (which keeps only signs: it
    expects ternary input). ``importance`` is one float32 weight per column (a row of an imatrix, as
    llama.cpp's quant_weights); the types whose llama.cpp quantizer weighs its rounding error by
    column then search as it does with them, the others ignore it."""
    t = _type(dtype, "quantize")
    if not t.can_quantize:
        raise ConversionError(f"[quantize] pyconv cannot quantize to {t.name}")
    x = np.asarray(array, dtype=np.float32, order="C")
    _check_shape(t, x.shape, "quantize")
    weights = None
    if importance is not None:
        weights = np.asarray(importance, dtype=np.float32, order="C")
        if weights.shape != (x.shape[-1],):
            raise ConversionError(f"[quantize] importance needs one value per column ({x.shape[-1]}), "
                                  f"got shape {weights.shape}")
    data: bytes = _core.quantize(x, t.id, weights)
    return data


def _as_bytes(data: Buffer) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def dequantize(data: Buffer, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """Float32 values of a tensor of ``shape`` whose data is stored as ``dtype`` (any type
    ``can_dequantize`` accepts), given exactly as a GGUF file holds it (I2_S with its 32-byte tail)."""
    t = _type(dtype, "dequantize")
    if not t.can_dequantize:
        raise ConversionError(f"[dequantize] pyconv cannot decode {t.name}")
    dims = tuple(int(d) for d in shape)
    _check_shape(t, dims, "dequantize")
    n = math.prod(dims)
    raw = _as_bytes(data)
    expected = dtypes.nbytes(t.name, n)
    if raw.size != expected:
        raise ConversionError(f"[dequantize] a {t.name} tensor of shape {dims} takes {expected} bytes, got {raw.size}")
    return _core.dequantize(raw, t.id, n).reshape(dims)


def _hex(b: bytes) -> str:
    return b.hex(" ") if b else "(nothing)"


def describe_difference(got: bytes, want: bytes, dtype: str) -> str:
    """"" when the encodings are equal; otherwise one line naming how many blocks differ and the
    first of them: its index, elements and byte range, with both versions of its bytes."""
    name = dtype.lower()
    if got == want:
        return ""
    t = dtypes.row(name)
    # blocks as a row counts them (I2_S: 128 elements in 32 bytes), then the tail
    block_elems = t.row_elems
    block_bytes = t.row_elems // t.block_elems * t.block_bytes
    packed = max(len(want) - t.tail_bytes, 0)
    size = f"{len(got)} bytes, expected {len(want)}; " if len(got) != len(want) else ""
    n_blocks = -(-max(len(got), len(want)) // block_bytes)
    differing = [b for b in range(n_blocks)
                 if got[b * block_bytes:(b + 1) * block_bytes] != want[b * block_bytes:(b + 1) * block_bytes]]
    first = differing[0]
    lo, hi = first * block_bytes, (first + 1) * block_bytes
    g, w = got[lo:hi], want[lo:hi]
    at = next(i for i in range(max(len(g), len(w))) if g[i:i + 1] != w[i:i + 1])
    if lo >= packed:
        where = f"the tail (the tensor's own values), bytes {lo}..{hi - 1}"
    else:
        where = f"block {first} (elements {first * block_elems}..{(first + 1) * block_elems - 1}, bytes {lo}..{hi - 1})"
    return (f"{name}: {size}{len(differing)} of {n_blocks} blocks differ; the first is {where}, first at its byte {at}: "
            f"got {_hex(g)} expected {_hex(w)}")
