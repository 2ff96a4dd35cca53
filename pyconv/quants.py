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

# I2_S packs 128 elements into 32 bytes and keeps one f32 scale per 2-D tensor (docs/i2s.md).
I2S_BLOCK = 128
I2S_TAIL_BYTES = 32

Buffer = bytes | bytearray | memoryview | np.ndarray


def _type_name(dtype: str, api: str) -> str:
    name = dtype.lower()
    try:
        dtypes.info(name)
    except _core.CoreError:
        raise ConversionError(f"[{api}] unknown type {dtype!r}") from None
    return name


def _row_block(dtype: str) -> int:
    """Elements a row of ``dtype`` must be a multiple of."""
    return I2S_BLOCK if dtype == "i2_s" else dtypes.block_elems(dtype)


def _check_shape(name: str, shape: tuple[int, ...], api: str) -> None:
    if not shape:
        raise ConversionError(f"[{api}] {name} needs at least one dimension, got a scalar")
    if name == "i2_s" and len(shape) != 2:
        raise ConversionError(f"[{api}] i2_s needs a 2-d tensor (one scale per tensor), got shape {shape}")
    if shape[-1] % _row_block(name) != 0:
        raise ConversionError(f"[{api}] rows of {shape[-1]} elements do not fit {name} blocks of {_row_block(name)}")


def _i2s_scale(x: np.ndarray) -> float:
    """BitNet's I2_S scale: the largest |x| of the tensor, NaN ignored (its C quantizer uses fmax)."""
    return float(np.max(np.abs(x), initial=0.0, where=~np.isnan(x)))


def quantize(array: ArrayLike, dtype: str) -> bytes:
    """The data of a tensor stored as ``dtype`` ("i2_s", "tq1_0", "tq2_0" or "q8_0"), byte for byte
    as in a GGUF file: blocks along the last dimension; I2_S adds its f32 scale (max |x|) and 28 zero
    bytes. The values are taken as float32. I2_S keeps only signs: it expects ternary input."""
    name = _type_name(dtype, "quantize")
    if not _core.can_quantize(name):
        raise ConversionError(f"[quantize] pyconv cannot quantize to {name}")
    x = np.asarray(array, dtype=np.float32, order="C")
    _check_shape(name, x.shape, "quantize")
    data = _core.quantize(x, name)
    if name == "i2_s":
        data += _core.i2s_tail(_i2s_scale(x))
    return data


def _as_bytes(data: Buffer) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def dequantize(data: Buffer, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """Float32 values of a tensor of ``shape`` whose data is stored as ``dtype`` (any type
    ``can_dequantize`` accepts), given exactly as a GGUF file holds it (I2_S with its 32-byte tail)."""
    name = _type_name(dtype, "dequantize")
    if not _core.can_dequantize(name):
        raise ConversionError(f"[dequantize] pyconv cannot decode {name}")
    dims = tuple(int(d) for d in shape)
    _check_shape(name, dims, "dequantize")
    n = math.prod(dims)
    raw = _as_bytes(data)
    expected = dtypes.nbytes(name, n)
    if raw.size != expected:
        raise ConversionError(f"[dequantize] a {name} tensor of shape {dims} takes {expected} bytes, got {raw.size}")
    scale = float(raw[n // 4:n // 4 + 4].view("<f4")[0]) if name == "i2_s" else 0.0
    return _core.dequantize(raw, name, n, scale).reshape(dims)


def _hex(b: bytes) -> str:
    return b.hex(" ") if b else "(nothing)"


def describe_difference(got: bytes, want: bytes, dtype: str) -> str:
    """"" when the encodings are equal; otherwise one line naming how many blocks differ and the
    first of them: its index, elements and byte range, with both versions of its bytes."""
    name = dtype.lower()
    if got == want:
        return ""
    if name == "i2_s":
        block_bytes, block_elems = I2S_BLOCK // 4, I2S_BLOCK
        packed = max(len(want) - I2S_TAIL_BYTES, 0)
    else:
        block_bytes, block_elems = int(dtypes.info(name)["block_bytes"]), _row_block(name)
        packed = len(want)
    size = f"{len(got)} bytes, expected {len(want)}; " if len(got) != len(want) else ""
    n_blocks = -(-max(len(got), len(want)) // block_bytes)
    differing = [b for b in range(n_blocks)
                 if got[b * block_bytes:(b + 1) * block_bytes] != want[b * block_bytes:(b + 1) * block_bytes]]
    first = differing[0]
    lo, hi = first * block_bytes, (first + 1) * block_bytes
    g, w = got[lo:hi], want[lo:hi]
    at = next((i for i in range(max(len(g), len(w))) if g[i:i + 1] != w[i:i + 1]))
    if lo >= packed:
        where = f"the tail (f32 scale, then zero bytes), bytes {lo}..{hi - 1}"
    else:
        where = f"block {first} (elements {first * block_elems}..{(first + 1) * block_elems - 1}, bytes {lo}..{hi - 1})"
    return (f"{name}: {size}{len(differing)} of {n_blocks} blocks differ; the first is {where}, first at its byte {at}: "
            f"got {_hex(g)} expected {_hex(w)}")
