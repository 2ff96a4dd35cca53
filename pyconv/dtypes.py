"""Element types: pyconv's lower-case names and how each container spells them.

The C++ core owns block sizes (``_core.dtype_info``); this module maps names between formats.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from . import _core

FLOAT_TYPES = ("f64", "f32", "f16", "bf16")

SAFETENSORS_NAMES = {
    "F64": "f64", "F32": "f32", "F16": "f16", "BF16": "bf16",
    "I64": "i64", "I32": "i32", "I16": "i16", "I8": "i8", "U8": "u8", "BOOL": "bool",
    "U16": "u16", "U32": "u32", "U64": "u64", "F8_E4M3": "f8_e4m3", "F8_E5M2": "f8_e5m2",
}

NUMPY_TYPES: dict[str, type[np.generic]] = {
    "f64": np.float64, "f32": np.float32, "f16": np.float16,
    "i64": np.int64, "i32": np.int32, "i16": np.int16, "i8": np.int8, "u8": np.uint8, "bool": np.bool_,
    "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
}


# every ggml type the core knows, by GGUF type id
GGML_TYPES = ("f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1",
              "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl",
              "iq3_s", "iq2_s", "iq4_xs", "iq1_m", "tq1_0", "tq2_0", "i2_s", "mxfp4", "nvfp4", "q1_0")


@cache
def info(name: str) -> dict[str, int | bool]:
    return dict(_core.dtype_info(name))


def is_float(name: str) -> bool:
    return bool(info(name)["is_float"])


def is_quant(name: str) -> bool:
    return bool(info(name)["is_quant"])


def block_elems(name: str) -> int:
    return int(info(name)["block_elems"])


def nbytes(name: str, numel: int) -> int:
    return int(_core.tensor_nbytes(name, numel))


def nbytes_of_elements(name: str, numel: int) -> int:
    """Bytes of the first ``numel`` elements (whole blocks), without I2_S's tensor tail."""
    i = info(name)
    return numel // int(i["block_elems"]) * int(i["block_bytes"])


def ggml_id(name: str) -> int:
    return int(info(name)["id"])


GGML_NAMES: dict[int, str] = {ggml_id(n): n for n in GGML_TYPES}
