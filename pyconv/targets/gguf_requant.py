"""GGUF to GGUF: the same tensors and metadata, re-typed (``pyconv quantize`` and ``convert x.gguf -o y.gguf``).

Tensor kinds are recognised from their GGUF names, so llama.cpp's type rules (norms and 1-d tensors
f32, embeddings f16 in ternary files, block-size fallbacks) and BitNet's (only projections ternary)
apply as for HF sources. When the out type moves a model to another runtime's architecture name
(BitNet: I2_S files are BitNet.cpp's ``bitnet-b1.58``), its keys move with it.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import gguf

from .. import dtypes
from ..archs.arch import Arch
from ..archs.catalog import Catalog
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import Op, OutTensor, Part, Plan, View
from ..sources.checkpoint import Checkpoint
from ..sources.gguf import GgufValue
from .gguf import TypeRules, file_type, place, tensor_type, ternary_note

log = logging.getLogger("pyconv")
# keys the new file states afresh
RECOMPUTED = ("general.architecture", "general.file_type", "general.alignment", "general.quantization_version")


@cache
def _kind_patterns() -> list[tuple[re.Pattern[str], gguf.MODEL_TENSOR]]:
    out = []
    for kind, fmt in gguf.TENSOR_NAMES.items():
        pattern = re.escape(fmt).replace(r"\{bid\}", r"\d+").replace(r"\{xid\}", r"\d+")
        out.append((re.compile(pattern + r"(\.weight|\.bias)?$"), kind))
    return out


def tensor_kind(name: str) -> gguf.MODEL_TENSOR | None:
    return next((kind for pattern, kind in _kind_patterns() if pattern.match(name)), None)


@cache
def _arch_key_templates() -> frozenset[str]:
    """gguf-py's per-architecture keys ("{arch}.vocab_size", ...)."""
    groups = [g for g in vars(gguf.Keys).values() if isinstance(g, type)]
    return frozenset(v for g in groups for v in vars(g).values() if isinstance(v, str) and v.startswith("{arch}."))


def moved_keys(kv: dict[str, GgufValue], source: str, target: str, arch: Arch | None) -> list[tuple[str, int, Any]]:
    """The KVs with llama.cpp's per-architecture keys under the target architecture's name. Keys
    another runtime reads under a literal name (BitNet-rs' ``bitnet.*``) stay; in a "bitnet" file
    some of them are llama.cpp's keys too, and then appear under both names."""
    literal = set(arch.gguf.literal_keys) if arch else set()
    out: dict[str, tuple[str, int, Any]] = {
        "general.architecture": ("general.architecture", int(gguf.GGUFValueType.STRING), target)}
    for key, value in kv.items():
        if key in RECOMPUTED:
            continue
        generic = "{arch}" + key[len(source):]
        if source != target and key.startswith(f"{source}.") and (key not in literal or generic in _arch_key_templates()):
            moved = target + key[len(source):]
            out.setdefault(moved, value.core_tuple(moved))
            if key not in literal:
                continue
        out.setdefault(key, value.core_tuple(key))
    return list(out.values())


def warn_if_graph_changes(arch: Arch, source: str, target: str, outtype: str | None) -> None:
    """One warning when the out type moves the file to a graph with another FFN activation: the
    file no longer suits the models its source suited."""
    was, now = arch.gguf.graph_activations.get(source), arch.gguf.graph_activations.get(target)
    if was and now and was != now:
        log.warning("GGUF architecture '%s' (FFN %s) becomes '%s' (FFN %s) for %s: right for %s models, "
                    "no longer for %s ones", source, was, target, now, outtype, now, was)


def plan_requant(ck: Checkpoint, kv: dict[str, GgufValue], out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
    """``ck``, a GGUF file whose first file holds ``kv``, re-typed into ``out``."""
    outtype = opts.common.outtype
    source = str(kv["general.architecture"].value) if "general.architecture" in kv else "unknown"
    arch = catalog.for_gguf(source)
    rules = TypeRules.of(opts, source, arch.gguf.ternarize if arch else None)
    quantized = [n for n, t in ck.tensors.items() if dtypes.is_quant(t.dtype)]
    if quantized and not opts.quant.allow_requantize:
        raise ConversionError(f"holds {ck.tensors[quantized[0]].dtype} tensors ({quantized[0]} and {len(quantized) - 1} more); "
                              "pyconv quantize starts from an F32/F16/BF16 GGUF, as quantizing twice compounds the "
                              "errors (--allow-requantize does it anyway)", file=ck.path)
    target = arch.gguf.name_for(outtype) if arch and outtype else source
    if arch:
        warn_if_graph_changes(arch, source, target, outtype)
    tensors = []
    for name, t in ck.tensors.items():
        kind = tensor_kind(name)
        ops: list[Op] = []
        if kind is None or outtype is None:
            dtype, why = t.dtype, "kept" if kind else "unrecognised GGUF name: kept as it is"
        else:
            dtype, why, ops = tensor_type(rules, t.dtype, kind, name, t.shape)
        if dtype == t.dtype and not ops:
            tensors.append(OutTensor.from_view(name, View.of(t), dtype, note=why))
        elif dtypes.is_float(t.dtype) or dtypes.row(t.dtype).can_dequantize:
            tensors.append(OutTensor(name, t.shape, dtype, [Part(View.of(t), (0,) * len(t.shape))], ops=ops, note=why))
        else:
            raise ConversionError(f"cannot re-type {t.dtype} data", tensor=name)
    kvs = moved_keys(kv, source, target, arch)
    kvs.append(("general.file_type", int(gguf.GGUFValueType.UINT32), file_type(outtype, tensors)))
    kvs.append(("general.quantization_version", int(gguf.GGUFValueType.UINT32), gguf.GGML_QUANT_VERSION))
    files = place(tensors, kvs, out.stem if out.suffix == ".gguf" else out.name, opts)
    plan = Plan(files, tensors, architecture=source)
    plan.late_files = [f"{f.name}.sha256" for f in files] + [f"{out.stem}.meta.json"]
    plan.notes.append(f"architecture {source} → GGUF '{target}'")
    if note := ternary_note(rules, tensors):
        plan.notes.append(note)
    return plan

