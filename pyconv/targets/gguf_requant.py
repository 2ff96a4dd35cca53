"""GGUF to GGUF: the same tensors and metadata, re-typed (``pyconv quantize`` and ``convert x.gguf -o y.gguf``).

Tensor kinds are recognised from their GGUF names, so llama.cpp's type rules (norms and 1-d tensors
f32, embeddings f16 in ternary files, block-size fallbacks) apply as for HF sources.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import gguf

from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import OutTensor, Plan, View
from ..sources.base import Checkpoint
from ..sources.gguf import GgufValue
from .gguf import check_outtype, file_type, place, tensor_type

# keys the new file states afresh
RECOMPUTED = ("general.file_type", "general.alignment", "general.quantization_version")


@cache
def _kind_patterns() -> list[tuple[re.Pattern[str], gguf.MODEL_TENSOR]]:
    out = []
    for kind, fmt in gguf.TENSOR_NAMES.items():
        pattern = re.escape(fmt).replace(r"\{bid\}", r"\d+").replace(r"\{xid\}", r"\d+")
        out.append((re.compile(pattern + r"(\.weight|\.bias)?$"), kind))
    return out


def tensor_kind(name: str) -> gguf.MODEL_TENSOR | None:
    return next((kind for pattern, kind in _kind_patterns() if pattern.match(name)), None)


def plan_requant(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    check_outtype(opts.outtype)
    kv: dict[str, GgufValue] = ck.extra["gguf_kv"]
    tensors = []
    for name, t in ck.tensors.items():
        kind = tensor_kind(name)
        if kind is None or opts.outtype is None:
            dtype, why = t.dtype, "kept" if kind else "unrecognised GGUF name: kept as it is"
        else:
            dtype, why = tensor_type(opts.outtype, t.dtype, kind, name, t.shape)
        if dtype != t.dtype and not (t.dtype in ("f32", "f16", "bf16") or dtypes_can_dequantize(t.dtype)):
            raise ConversionError(f"cannot re-type {t.dtype} data", tensor=name)
        tensors.append(OutTensor.from_view(name, View.of(t), dtype, note=why))
    kvs = [v.core_tuple(k) for k, v in kv.items() if k not in RECOMPUTED]
    kvs.append(("general.file_type", int(gguf.GGUFValueType.UINT32), file_type(opts.outtype, tensors)))
    kvs.append(("general.quantization_version", int(gguf.GGUFValueType.UINT32), gguf.GGML_QUANT_VERSION))
    files = place(tensors, kvs, out.stem if out.suffix == ".gguf" else out.name, opts)
    plan = Plan(files, tensors)
    plan.late_files = [f"{f.name}.sha256" for f in files] + [f"{out.stem}.meta.json"]
    arch = kv.get("general.architecture")
    plan.notes.append(f"architecture {arch.value if arch else 'unknown'} → same GGUF architecture")
    return plan


def dtypes_can_dequantize(dtype: str) -> bool:
    from .. import _core

    return bool(_core.can_dequantize(dtype))
