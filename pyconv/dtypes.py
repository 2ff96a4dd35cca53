"""Element types: pyconv's lower-case names and how each container spells them.

The C++ type table (``_core.types()``) is the only table of types: sizes, row and tensor rules,
kernels, per-tensor tails, container names and file types are fields of its rows. This module
indexes the rows by name and by the ids containers use, and answers questions about them.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import _core

TYPES: dict[str, _core.TypeInfo] = {t.name: t for t in _core.types()}

FLOAT_TYPES = tuple(n for n, t in TYPES.items() if t.kind == _core.TypeKind.FLOAT)
SAFETENSORS_NAMES = {t.safetensors_name: n for n, t in TYPES.items() if t.safetensors_name}
NUMPY_TYPES: dict[str, type[np.generic]] = {n: np.dtype(t.buffer_format).type for n, t in TYPES.items() if t.buffer_format}
# every type a GGUF file can hold, by its GGUF type id
GGML_NAMES: dict[int, str] = {t.ggml_id: n for n, t in TYPES.items() if t.ggml_id is not None}


def row(name: str) -> _core.TypeInfo:
    """The type table's row for ``name``; KeyError for a name it does not have."""
    return TYPES[name]


@cache
def info(name: str) -> dict[str, int | bool]:
    r = row(name)
    return {"id": int(r.id), "block_elems": r.block_elems, "block_bytes": r.block_bytes,
            "is_float": r.kind == _core.TypeKind.FLOAT, "is_quant": r.kind == _core.TypeKind.BLOCK}


def is_float(name: str) -> bool:
    return row(name).kind == _core.TypeKind.FLOAT


def is_quant(name: str) -> bool:
    return row(name).kind == _core.TypeKind.BLOCK


def is_ternary(name: str | None) -> bool:
    """Whether a type keeps signs and a scale only (every weight -s, 0 or +s)."""
    return name is not None and row(name).ternary


def block_elems(name: str) -> int:
    return row(name).block_elems


def row_elems(name: str) -> int:
    """Elements a row (the last dimension) of ``name`` must be a multiple of."""
    return row(name).row_elems


def nbytes(name: str, numel: int) -> int:
    """Bytes of a whole tensor as stored: its blocks, then the type's tail."""
    return int(_core.tensor_nbytes(row(name).id, numel))


def nbytes_of_elements(name: str, numel: int) -> int:
    """Bytes of the first ``numel`` elements (whole blocks), without the tensor's tail."""
    r = row(name)
    return numel // r.block_elems * r.block_bytes


def gguf_outtypes() -> tuple[str, ...]:
    """The types pyconv writes into GGUF files as weights: those with a llama.cpp file type that are
    floats or have a quantizer."""
    return tuple(n for n, t in TYPES.items() if t.file_type is not None and (t.kind == _core.TypeKind.FLOAT or t.can_quantize))


def file_type(name: str) -> int | None:
    """llama.cpp's general.file_type for a file mostly of ``name``, for the types pyconv writes."""
    ft = row(name).file_type
    return None if ft is None else int(ft)


def fallback(name: str) -> str | None:
    """The type llama.cpp's quantizer writes instead of ``name`` for rows that do not fit its blocks
    (None: it has none, and F16 is what remains)."""
    fb = row(name).fallback
    return None if fb is None else GGML_NAMES[int(fb)]


def packed_type(codes: str, scales: str, block: tuple[int, ...]) -> str | None:
    """The block type whose blocks are ``codes`` with one ``scales`` value per ``block`` (elements along
    each dim) in another layout, so that the engine writes them without requantizing; None if none is."""
    for name, t in TYPES.items():
        if (t.pack_codes, t.pack_scales) == (codes, scales) and block[-1:] == (t.block_elems,) and set(block[:-1]) <= {1}:
            return name
    return None
