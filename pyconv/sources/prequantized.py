"""Pre-quantized checkpoints: weights stored as codes beside scale tensors, as a ``quantization_config``
in config.json describes them. The formats pyconv reads become weights whose codes the engine
multiplies by their scales chunk by chunk (``SourceTensor.scale``), the scale tensors leave the
checkpoint, and the config no longer says the model is quantized. Anything else a checkpoint says
about quantization, in its config or in the names of its tensors, is refused before a byte moves:
converted without its scales it would give wrong weights without a word.

- ``fp8`` (transformers' FineGrainedFP8, DeepSeek-V3, Qwen3-FP8): f8_e4m3 weights and a
  ``<weight>_scale_inv`` per weight, one value per ``weight_block_size`` block (per tensor without one).
- ``compressed-tensors`` in its ``float-quantized``, ``int-quantized`` and ``naive-quantized`` formats:
  symmetric 8-bit f8_e4m3 or int8 weights and a ``weight_scale`` per tensor, output channel, group
  or block.
- ``mxfp4`` (gpt-oss): ``<weight>_blocks`` of e2m1 codes and ``<weight>_scales`` of e8m0 exponents,
  32 elements a block.
- ``bitnet``: transformers' packed ternary weights, which the GGUF target unpacks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import dtypes
from ..errors import ConversionError
from .base import Scale, SourceTensor
from .checkpoint import Checkpoint

TORCH_FLOATS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
# quant_methods whose tensors another part of pyconv reads as they are (the GGUF target unpacks BitNet's)
KEPT = ("bitnet",)
COMPRESSED_FORMATS = ("float-quantized", "int-quantized", "naive-quantized")
CODE_TYPES = {"float": ("f8_e4m3",), "int": ("i8",)}
# the last name component of tensors that quantizers write beside the weights they describe
COMPANIONS = re.compile(r"(^|\.)(weight_scale_inv|weight_scale|weight_global_scale|weight_zero_point|weight_packed|"
                        r"weight_shape|input_scale|input_global_scale|input_zero_point|output_scale|activation_scale|"
                        r"k_scale|v_scale|qweight|qzeros|scales|g_idx|SCB|absmax|quant_map|\w+_scale_inv|\w+_blocks|\w+_scales)$"
                        r"|\.quant_state\.")
# activation and cache scales: what a runtime quantizing activations reads; the weights do not need them
ACTIVATION_SCALES = re.compile(r"(^|\.)(input_scale|input_zero_point|output_scale|activation_scale|k_scale|v_scale)$")


def value_dtype(config: dict[str, Any]) -> str:
    """The model's float type, which dequantized weights take (transformers gives them the same)."""
    named = config.get("dtype") or config.get("torch_dtype")
    return TORCH_FLOATS.get(str(named), "bf16")


def _where(ck: Checkpoint) -> Path:
    return ck.folder / "config.json"


def _refuse_companions(ck: Checkpoint, names: Iterable[str], why: str) -> None:
    for name in names:
        if COMPANIONS.search(name):
            raise ConversionError(f"is a quantization tensor {why}; converted as a weight it would be wrong",
                                  file=ck.path, tensor=name)


def _refuse_unused(ck: Checkpoint, out: dict[str, SourceTensor], consumed: Iterable[str] = ()) -> None:
    """Refuses what a reader left unexplained: quantization tensors that are neither a weight's scale,
    nor ``consumed`` into a weight, nor an activation scale, whether passed on as they are or dropped."""
    used = {t.scale.tensor.name for t in out.values() if t.scale is not None} | set(consumed)
    _refuse_companions(ck, (n for n in ck.tensors if n not in used and not ACTIVATION_SCALES.search(n)
                            and (n not in out or out[n].scale is None)), "that this quantization does not explain")


def _int_list(value: Any, what: str, ck: Checkpoint) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                          for v in value):
        raise ConversionError(f"quantization_config {what} is {value!r}, not a list of positive integers", file=_where(ck))
    return tuple(value)


def _block(shape: tuple[int, ...], last_two: tuple[int, ...] | None) -> tuple[int, ...]:
    """Elements per scale along each dim: the last two dims cut in blocks (0: the whole dim) and one
    block per index of the leading dims, or, without blocks, one scale for the whole tensor."""
    if last_two is None:
        return tuple(max(d, 1) for d in shape)
    tail = last_two[-len(shape):] if len(shape) < 2 else last_two
    lead = (1,) * (len(shape) - len(tail))
    return lead + tuple(b or max(d, 1) for b, d in zip(tail, shape[len(lead):]))


def _squeezed(shape: Iterable[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _scaled(ck: Checkpoint, weight: SourceTensor, scale: SourceTensor, block: tuple[int, ...], values: str,
            codes: tuple[str, ...]) -> SourceTensor:
    if weight.dtype not in codes:
        raise ConversionError(f"{weight.dtype} codes beside a scale; this quantization stores {' or '.join(codes)}",
                              file=ck.path, tensor=weight.name)
    if not dtypes.is_float(scale.dtype) or scale.scale is not None:
        raise ConversionError(f"a scale of {scale.dtype} values; scales are floats", file=ck.path, tensor=scale.name)
    if weight.strides is not None or not weight.shape:
        raise ConversionError("codes that are not a row-major array cannot take block scales", file=ck.path, tensor=weight.name)
    grid = tuple(-(-d // b) for d, b in zip(weight.shape, block))
    if math.prod(grid) != scale.numel or _squeezed(grid) != _squeezed(scale.shape):
        raise ConversionError(f"scale of shape {list(scale.shape)} for a {list(weight.shape)} weight in blocks of "
                              f"{list(block)}: it needs {list(grid)}", file=ck.path, tensor=scale.name)
    return replace(weight, scale=Scale(scale, block, values))


def _fp8(ck: Checkpoint, quant: dict[str, Any], values: str) -> dict[str, SourceTensor]:
    block = None if quant.get("weight_block_size") is None else _int_list(quant["weight_block_size"], "weight_block_size", ck)
    if block is not None and len(block) != 2:
        raise ConversionError(f"quantization_config weight_block_size is {list(block)}, not [rows, columns]", file=_where(ck))
    out: dict[str, SourceTensor] = {}
    scales = {name for name in ck.tensors if name.endswith("_scale_inv")}
    for name, t in ck.tensors.items():
        if name in scales or ACTIVATION_SCALES.search(name):
            continue
        scale = ck.tensors.get(name + "_scale_inv")
        if scale is None:
            if t.dtype.startswith("f8_"):
                raise ConversionError(f"{t.dtype} weight without its weight_scale_inv", file=ck.path, tensor=name)
            out[name] = t
            continue
        out[name] = _scaled(ck, t, scale, _block(t.shape, block), values, ("f8_e4m3", "f8_e5m2"))
    _refuse_unused(ck, out)
    return out


def _compressed_scheme(ck: Checkpoint, quant: dict[str, Any]) -> tuple[str, tuple[int, ...] | None]:
    """(kind, block of the last two dims, 0 for a whole dim, or None for one scale per tensor) of the
    one weight scheme of the config's groups."""
    fmt = quant.get("format")
    groups = quant.get("config_groups") or {}
    if not isinstance(groups, dict) or not groups:
        raise ConversionError("compressed-tensors quantization_config has no config_groups", file=_where(ck))
    schemes = []
    for group_name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            raise ConversionError(f"compressed-tensors group '{group_name}' quantizes no weights", file=_where(ck))
        group_format = group.get("format") or fmt
        if group_format not in COMPRESSED_FORMATS:
            raise ConversionError(f"compressed-tensors format {group_format!r} is not one pyconv reads "
                                  f"({', '.join(COMPRESSED_FORMATS)})", file=_where(ck))
        kind, bits, strategy = weights.get("type"), weights.get("num_bits"), weights.get("strategy")
        block: tuple[int, ...] | None
        if kind not in CODE_TYPES or bits != 8:
            raise ConversionError(f"compressed-tensors weights of type {kind!r} with {bits!r} bits; pyconv reads 8-bit "
                                  "float and int weights", file=_where(ck))
        if weights.get("symmetric") is False:
            raise ConversionError("compressed-tensors weights with zero points (symmetric: false) are not supported",
                                  file=_where(ck))
        if strategy == "tensor":
            block = None
        elif strategy == "channel":
            block = (1, 0)
        elif strategy == "group":
            block = (1, _int_list([weights.get("group_size")], "group_size", ck)[0])
        elif strategy == "block":
            block = _int_list(weights.get("block_structure"), "block_structure", ck)
            if len(block) != 2:
                raise ConversionError(f"compressed-tensors block_structure {list(block)} is not [rows, columns]",
                                      file=_where(ck))
        else:
            raise ConversionError(f"compressed-tensors strategy {strategy!r} is not supported (tensor, channel, group, "
                                  "block)", file=_where(ck))
        schemes.append((str(kind), block))
    if len(set(schemes)) != 1:
        raise ConversionError("compressed-tensors groups quantize weights differently, which pyconv does not read",
                              file=_where(ck))
    return schemes[0]


def _compressed(ck: Checkpoint, quant: dict[str, Any], values: str) -> dict[str, SourceTensor]:
    kind, block = _compressed_scheme(ck, quant)
    out: dict[str, SourceTensor] = {}
    for name, t in ck.tensors.items():
        if name.endswith(".weight_scale") or ACTIVATION_SCALES.search(name):
            continue
        if name.endswith(".weight_zero_point"):
            raise ConversionError("compressed-tensors zero points are not supported", file=ck.path, tensor=name)
        scale = ck.tensors.get(name + "_scale") if name.endswith(".weight") else None
        if scale is None:
            if kind == "float" and t.dtype.startswith("f8_"):
                raise ConversionError(f"{t.dtype} weight without its weight_scale", file=ck.path, tensor=name)
            out[name] = t
            continue
        out[name] = _scaled(ck, t, scale, _block(t.shape, block), values, CODE_TYPES[kind])
    _refuse_unused(ck, out)
    return out


def mxfp4_codes(blocks: SourceTensor, scales: SourceTensor, name: str, values: str, file: Path | None = None) -> SourceTensor:
    """An MX-format weight from its two tensors, as gpt-oss stores its experts: ``blocks`` (u8,
    [..., G, 16]: 32 e2m1 codes a block, the low nibble first) and ``scales`` (u8, [..., G]: one e8m0
    exponent a block), as the weight [..., G * 32] the engine decodes."""
    if blocks.dtype != "u8" or scales.dtype != "u8" or len(blocks.shape) < 2 or blocks.shape[-1] != 16 \
            or blocks.shape[:-1] != scales.shape or blocks.strides is not None or scales.strides is not None:
        raise ConversionError(f"MXFP4 blocks {blocks.dtype}{list(blocks.shape)} and scales {scales.dtype}"
                              f"{list(scales.shape)}: they must be u8 [..., G, 16] and u8 [..., G]", file=file, tensor=name)
    shape = (*blocks.shape[:-2], blocks.shape[-2] * 32)
    exponents = replace(scales, dtype="f8_e8m0")
    block = (1,) * (len(shape) - 1) + (32,)
    return replace(blocks, name=name, dtype="f4_e2m1", shape=shape, scale=Scale(exponents, block, values))


def _mxfp4(ck: Checkpoint, _quant: dict[str, Any], values: str) -> dict[str, SourceTensor]:
    out: dict[str, SourceTensor] = {}
    consumed: list[str] = []
    for name, t in ck.tensors.items():
        if name.endswith("_scales") and name.removesuffix("_scales") + "_blocks" in ck.tensors:
            continue
        if name.endswith("_blocks") and (scales := ck.tensors.get(name.removesuffix("_blocks") + "_scales")):
            weight = name.removesuffix("_blocks")
            out[weight] = mxfp4_codes(t, scales, weight, values, ck.path)
            consumed.append(name)
            continue
        out[name] = t
    _refuse_unused(ck, out, consumed)
    return out


READERS = {"fp8": _fp8, "compressed-tensors": _compressed, "mxfp4": _mxfp4}


def dequantize(ck: Checkpoint) -> None:
    """Turn a pre-quantized checkpoint's weights into scaled codes, in place, or refuse it in one line."""
    quant = (ck.config or {}).get("quantization_config")
    if quant is None:
        _refuse_companions(ck, ck.tensors, "and config.json has no quantization_config to say how to apply it")
        return
    method = quant.get("quant_method")
    if method in KEPT:
        return
    reader = READERS.get(str(method))
    if reader is None:
        known = ", ".join((*READERS, *KEPT))
        raise ConversionError(f"quantization_config quant_method {method!r} is not one pyconv converts ({known})",
                              file=_where(ck))
    assert ck.config is not None
    ck.tensors = reader(ck, quant, value_dtype(ck.config))
    ck.config = {k: v for k, v in ck.config.items() if k != "quantization_config"}
