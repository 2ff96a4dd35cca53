"""safetensors files and sharded folders, read from their headers; data stays on disk.

Every header is checked before it is trusted: length bounds, JSON, dtype names, shape x itemsize
against the byte span, spans inside the file and not overlapping, index entries inside the folder.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import dtypes
from ..errors import ConversionError
from .base import Segment, SourceTensor
from .json_files import load_json, read_config
from .state_dict import StateDictCheckpoint

# safetensors itself refuses headers over 100 MB; a larger one is a lie or an attack.
MAX_HEADER_BYTES = 100_000_000
INDEX_NAME = "model.safetensors.index.json"


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently; another reader may keep the first, so the file
    # would mean different tensors to different tools
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """Returns (header JSON, data start, file size) after the structural checks."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConversionError(f"not a safetensors file: {size} bytes, shorter than the 8-byte header length", file=path)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise ConversionError(f"header length {n} is over the {MAX_HEADER_BYTES}-byte limit", file=path)
            if 8 + n > size:
                raise ConversionError(f"header length {n} runs past the end of the file ({size} bytes): truncated or not safetensors", file=path)
            raw = f.read(n)
    except OSError as e:
        raise ConversionError(f"cannot read: {e.strerror}", file=path) from None
    try:
        header = load_json(raw, path, "header is not valid JSON", object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ConversionError(f"{e.args[0]!r} appears twice in the header", file=path) from None
    if not isinstance(header, dict):
        raise ConversionError("header is not a JSON object", file=path)
    return header, 8 + n, size


def read_file(path: Path) -> tuple[dict[str, SourceTensor], dict[str, str]]:
    """Tensors (in data order) and ``__metadata__`` of one safetensors file."""
    header, data_start, size = read_header(path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ConversionError("__metadata__ must map strings to strings", file=path)
    data_size = size - data_start
    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, SourceTensor] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise ConversionError("header entry is not an object", file=path, tensor=name)
        st_dtype = entry.get("dtype")
        if not isinstance(st_dtype, str) or st_dtype not in dtypes.SAFETENSORS_NAMES:
            raise ConversionError(f"unknown dtype {st_dtype!r}", file=path, tensor=name)
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ConversionError(f"shape {shape!r} is not a list of non-negative integers", file=path, tensor=name)
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ConversionError(f"data_offsets {offsets!r} is not a pair of integers", file=path, tensor=name)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ConversionError(f"data_offsets [{begin}, {end}] fall outside the {data_size} data bytes", file=path, tensor=name)
        dtype = dtypes.SAFETENSORS_NAMES[st_dtype]
        numel = math.prod(shape)
        want = numel * dtypes.info(dtype)["block_bytes"]
        if end - begin != want:
            raise ConversionError(f"{st_dtype}{shape} needs {want} bytes, data_offsets span {end - begin}", file=path, tensor=name)
        spans.append((begin, end, name))
        tensors[name] = SourceTensor(name, dtype, tuple(shape), (Segment(path, data_start + begin, end - begin),))
    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in itertools.pairwise(spans):
        if b1 < e0:
            raise ConversionError(f"bytes of '{n0}' [{b0}, {e0}) and '{n1}' overlap", file=path)
    ordered = {name: tensors[name] for _b, _e, name in spans}
    return ordered, meta


def inside(folder: Path, name: Any, index: Path) -> Path:
    """A shard path from an index: a plain relative name that stays in the folder."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\\" in name or "\x00" in name:
        raise ConversionError(f"weight_map names {name!r}, which is not a relative file name", file=index)
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ConversionError(f"weight_map entry {name!r} points outside the folder", file=index)
    return folder / name


def read_index(index: Path) -> dict[str, Path]:
    """``weight_map`` of an index.json, each shard checked to stay in the folder."""
    try:
        text = index.read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read index ({e})", file=index) from None
    doc = load_json(text, index, "cannot read index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError("index has no weight_map", file=index)
    return {str(k): inside(index.parent, v, index) for k, v in weight_map.items()}


Side = TypeVar("Side", bound=dict[str, Any])


def read_shards(index: Path, read: Callable[[Path], tuple[dict[str, SourceTensor], Side]]) -> tuple[dict[str, SourceTensor], list[Path], Side]:
    """A sharded folder's tensors, each from the shard its index names, plus the first shard's
    non-empty side information (metadata, saved values) that ``read`` returns with them."""
    weight_map = read_index(index)
    shards = list(dict.fromkeys(weight_map.values()))
    tensors: dict[str, SourceTensor] = {}
    side: Side | None = None
    for shard in shards:
        if not shard.exists():
            raise ConversionError(f"shard '{shard.name}' listed in the index is missing", file=index)
        found, shard_side = read(shard)
        side = side or shard_side
        for name, t in found.items():
            if weight_map.get(name) == shard:
                tensors[name] = t
    missing = [n for n in weight_map if n not in tensors]
    if missing:
        raise ConversionError(f"{len(missing)} tensors listed in the index are not in their shard, first '{missing[0]}'", file=index)
    assert side is not None  # read_index refuses an empty weight_map, so there was a shard
    return tensors, shards, side


def recognises(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and (any(path.glob("*.safetensors.index.json")) or any(path.glob("*.safetensors")))


class SafetensorsCheckpoint(StateDictCheckpoint):
    format_name = "safetensors"


def open_safetensors(path: Path) -> SafetensorsCheckpoint:
    """A .safetensors file, a folder with one, or a sharded folder with model.safetensors.index.json."""
    if path.is_file():
        tensors, meta = read_file(path)
        return SafetensorsCheckpoint(path, tensors, [path], meta, read_config(path.parent))
    index = path / INDEX_NAME
    if not index.exists():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        index = indexes[0] if len(indexes) == 1 else index
    if index.exists():
        tensors, shards, meta = read_shards(index, read_file)
        return SafetensorsCheckpoint(path, tensors, shards, meta, read_config(path))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConversionError("no .safetensors file and no index in this folder", file=path)
    tensors = {}
    meta = {}
    for f in files:
        found, file_meta = read_file(f)
        meta = meta or file_meta
        for name, t in found.items():
            if name in tensors:
                # without an index, files that share a tensor are separate models, not shards of one
                raise ConversionError(f"'{tensors[name].segments[0].path.name}' and '{f.name}' both hold this tensor and there "
                                      "is no index: they are separate models, name the file to convert", file=path, tensor=name)
            tensors[name] = t
    return SafetensorsCheckpoint(path, tensors, files, meta, read_config(path))
