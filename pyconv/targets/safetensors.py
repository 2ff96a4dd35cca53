"""safetensors output: one file, or Hugging Face shards with ``model.safetensors.index.json``."""

from __future__ import annotations

import json
from pathlib import Path

from .. import dtypes
from ..errors import ConversionError
from ..plan import OutFile, OutTensor, Plan
from .sharding import assign_shards, shard_name

WEIGHTS_STEM = "model"


def out_dtype(source_dtype: str, outtype: str | None, tensor: str) -> str:
    """``outtype`` applies to floating-point tensors only; integers and bools pass through."""
    if dtypes.is_quant(source_dtype):  # dequantized on the way
        if outtype is None:
            raise ConversionError(f"{source_dtype} data cannot be stored in safetensors; pass --outtype f32|f16|bf16", tensor=tensor)
        return outtype
    if outtype is None or not dtypes.is_float(source_dtype):
        return source_dtype
    return outtype


def check_outtype(outtype: str | None) -> None:
    if outtype is not None and outtype not in ("f32", "f16", "bf16"):
        raise ConversionError(f"--outtype {outtype} is not a safetensors type (use f32, f16 or bf16)")


def place_in_files(tensors: list[OutTensor], *, stem: str, suffix: str = ".safetensors", max_shard_size: int | None,
                   metadata: dict[str, str]) -> Plan:
    """Assign tensors to shard files and add the index when there is more than one."""
    shard_of = assign_shards([t.nbytes for t in tensors], max_shard_size)
    count = (shard_of[-1] + 1) if shard_of else 1
    meta = {"format": "pt", **metadata}
    files = [OutFile(shard_name(stem, i, count, suffix), "safetensors", metadata=meta) for i in range(count)]
    for t, s in zip(tensors, shard_of):
        t.file = s
    plan = Plan(files, tensors)
    if count > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in tensors)},
            "weight_map": {t.name: files[t.file].name for t in tensors},
        }
        plan.side_files[f"{stem}{suffix}.index.json"] = (json.dumps(index, indent=2) + "\n").encode()
    return plan


def output_names(out: Path) -> tuple[bool, str]:
    """(is the output a folder, shard stem): ``x.safetensors`` is a file, anything else a folder."""
    if out.suffix == ".safetensors":
        return False, out.stem
    return True, WEIGHTS_STEM
