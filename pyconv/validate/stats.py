"""Tensor statistics streamed over mapped data: chunks are decoded to f32 by the C++ kernels and
reduced by numba, so no float copy of a whole tensor, let alone a model, is ever built."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .. import _core, dtypes

CHUNK_ELEMENTS = 1 << 20


@numba.njit(cache=True, nogil=True)
def _reduce(x: np.ndarray) -> tuple[float, int, int, float, float]:  # pragma: no cover - compiled
    sumsq = 0.0
    nan = 0
    inf = 0
    absmax = 0.0
    min_nonzero = math.inf
    for v in x:
        if math.isnan(v):
            nan += 1
        elif math.isinf(v):
            inf += 1
        else:
            sumsq += float(v) * float(v)
            a = abs(v)
            if a > absmax:
                absmax = a
            if 0 < a < min_nonzero:
                min_nonzero = a
    return sumsq, nan, inf, absmax, min_nonzero


@numba.njit(cache=True, nogil=True)
def _count_code3(packed: np.ndarray, block_bytes: int, code_bytes: int) -> int:  # pragma: no cover - compiled
    """2-bit codes equal to 3 (never written by I2_S / TQ2_0 quantizers) in the code bytes of each block."""
    bad = 0
    for start in range(0, packed.size - block_bytes + 1, block_bytes):
        for i in range(start, start + code_bytes):
            b = packed[i]
            for shift in range(0, 8, 2):
                if (b >> shift) & 3 == 3:
                    bad += 1
    return bad


@dataclass
class TensorStats:
    numel: int
    rms: float
    nan: int
    inf: int
    absmax: float
    bad_codes: int = 0
    min_nonzero: float = math.inf  # smallest non-zero |x|


def tensor_stats(data: np.ndarray, dtype: str, numel: int, *, tensor_scale: float = 0.0) -> TensorStats:
    """Statistics of ``numel`` elements of ``dtype`` stored in the bytes ``data`` (a mapped array)."""
    raw = np.asarray(data).reshape(-1).view(np.uint8)
    sumsq, nan, inf, absmax, min_nonzero = 0.0, 0, 0, 0.0, math.inf
    block = dtypes.block_elems(dtype)
    step = max(block, CHUNK_ELEMENTS // block * block)
    bad = 0
    if dtype == "i2_s":
        bad = _count_code3(raw[: numel // 4], 32, 32)
    elif dtype == "tq2_0":
        bad = _count_code3(raw, 66, 64)
    for start in range(0, numel, step):
        n = min(step, numel - start)
        first, last = dtypes.nbytes_of_elements(dtype, start), dtypes.nbytes_of_elements(dtype, start + n)
        chunk = raw[first:last]
        if dtype == "f32":
            values = chunk.view(np.float32)
        elif dtypes.is_float(dtype):
            values = np.frombuffer(_core.cast(chunk, dtype, "f32"), np.float32)
        else:
            values = _core.dequantize(chunk, dtype, n, tensor_scale)
        s, a, b, m, z = _reduce(values)
        sumsq, nan, inf, absmax, min_nonzero = sumsq + s, nan + a, inf + b, max(absmax, m), min(min_nonzero, z)
    rms = math.sqrt(sumsq / numel) if numel else 0.0
    return TensorStats(numel, rms, nan, inf, absmax, bad, min_nonzero)
