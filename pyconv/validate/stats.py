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


@dataclass
class TensorStats:
    numel: int
    rms: float
    nan: int
    inf: int
    absmax: float
    bad_codes: int = 0  # codes the type's quantizer never writes (TQ2_0 and I2_S: 2-bit code 3)
    min_nonzero: float = math.inf  # smallest non-zero |x|


def tensor_stats(data: np.ndarray, dtype: str, numel: int) -> TensorStats:
    """Statistics of a tensor of ``numel`` elements of ``dtype`` stored in the bytes ``data`` (a
    mapped array holding the whole tensor: its blocks, then the type's tail)."""
    raw = np.asarray(data).reshape(-1).view(np.uint8)
    sumsq, nan, inf, absmax, min_nonzero = 0.0, 0, 0, 0.0, math.inf
    t = dtypes.row(dtype)
    step = max(t.row_elems, CHUNK_ELEMENTS // t.row_elems * t.row_elems)
    bad = int(_core.invalid_codes(raw, t.id, numel))
    params = _core.tensor_params(raw, t.id, numel)
    for start in range(0, numel, step):
        n = min(step, numel - start)
        first, last = dtypes.nbytes_of_elements(dtype, start), dtypes.nbytes_of_elements(dtype, start + n)
        chunk = raw[first:last]
        if dtype == "f32":
            values = chunk.view(np.float32)
        elif dtypes.is_float(dtype):
            values = np.frombuffer(_core.cast(chunk, t.id, _core.DType.F32), np.float32)
        else:
            values = _core.dequantize_blocks(chunk, t.id, n, params)
        s, a, b, m, z = _reduce(values)
        sumsq, nan, inf, absmax, min_nonzero = sumsq + s, nan + a, inf + b, max(absmax, m), min(min_nonzero, z)
    rms = math.sqrt(sumsq / numel) if numel else 0.0
    return TensorStats(numel, rms, nan, inf, absmax, bad, min_nonzero)
