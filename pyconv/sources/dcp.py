"""PyTorch Distributed Checkpoints (``torch.distributed.checkpoint``, as FSDP2 and torchtitan save them):
every tensor as byte segments of the rank files, assembled from its chunks without loading any.

A checkpoint folder holds ``.metadata`` (a pickle of DCP's dataclasses: per flattened key its dtype,
global shape and chunks, i.e. boxes given by offsets and sizes, and per chunk the file, offset and
length of its bytes) and ``__<rank>_<n>.distcp`` files. With the default serialization each chunk's
bytes are a complete ``torch.save`` of the chunk, a zip archive inside the rank file; the reader reads
its directory and pickle only, and places the chunks' rows in the tensor's row-major order. The
pickles are read with the restricted unpickler: DCP's classes come out as inert data.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import dtypes
from ..errors import ConversionError
from ..options import ConvertOptions
from .base import SourceTensor, byte_range
from .json_files import read_config
from .state_dict import StateDictCheckpoint
from .torch_pickle import (
    MAX_PICKLE_BYTES,
    Inert,
    PickledTensor,
    PickleRefused,
    TorchDType,
    inert_class,
    load,
    read_pickle,
)

METADATA = ".metadata"
# where the model's state dict is in the saved state, most usual first; then the top level
MODEL_KEYS = ("model", "app.model")
# pieces a tensor's bytes may be cut into: a checkpoint sharded along its rows is one piece per chunk,
# one sharded along a trailing dimension one per chunk and row, and past this it is not worth a plan
MAX_PIECES = 1 << 20
_META = "torch.distributed.checkpoint.metadata"
_FS = "torch.distributed.checkpoint.filesystem"
_RANK_FILE = re.compile(r"__(\d+)_\d+\.distcp")
_ZIP_MAGIC = b"PK\x03\x04"


def _layout(name: Any) -> str:
    # torch pickles a layout as torch.serialization._get_layout("torch.strided")
    if name != "torch.strided":
        raise PickleRefused(f"a tensor has layout {str(name)[:80]!r}; pyconv reads strided (dense) tensors only")
    return "strided"


# The classes DCP pickles in .metadata, read as data so that nothing of theirs runs.
DCP_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch.serialization", "_get_layout"): _layout,
    **{key: inert_class(*key) for key in (
        *((_META, n) for n in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                               "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
        (_FS, "_StorageInfo"),
        ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
    )},
}


def recognises(path: Path) -> bool:
    return path.is_dir() and (path / METADATA).is_file()


@dataclass(frozen=True)
class _Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)

    def overlaps(self, other: _Chunk) -> bool:
        return all(a < c + m and c < a + n for a, n, c, m in zip(self.offsets, self.sizes, other.offsets, other.sizes))


@dataclass(frozen=True)
class _Stored:
    """Where a chunk's bytes are: ``length`` bytes at ``offset`` of the rank file ``file``."""

    file: str
    offset: int
    length: int
    transforms: tuple[str, ...]


@dataclass(frozen=True)
class _Entry:
    fqn: str                      # the flattened key DCP stores it under
    keys: tuple[str, ...] | None  # the nested keys it was saved under, when the planner recorded them
    dtype: TorchDType
    shape: tuple[int, ...]
    chunks: tuple[_Chunk, ...]


@dataclass
class _Metadata:
    path: Path
    tensors: dict[str, _Entry]
    others: list[str]                                  # non-tensor entries (pickled objects)
    stored: dict[tuple[str, tuple[int, ...] | None], _Stored]
    version: str | None

    def error(self, message: str, tensor: str | None = None) -> ConversionError:
        return ConversionError(message, file=self.path, tensor=tensor)


def _state(md: Path, obj: Any, kind: str, module: str = _META) -> Any:
    """The pickled state of a DCP object of class ``kind``."""
    if not isinstance(obj, Inert) or obj.qualname != f"{module}.{kind}":
        found = obj.qualname if isinstance(obj, Inert) else type(obj).__name__
        raise ConversionError(f"holds a {found} where DCP writes a {kind}", file=md)
    return getattr(obj, "state", None)


def _fields(md: Path, obj: Any, kind: str, module: str = _META) -> dict[str, Any]:
    state = _state(md, obj, kind, module)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ConversionError(f"its {kind} has no fields", file=md)
    return state


def _ints(md: Path, value: Any, what: str, fqn: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConversionError(f"{what} {str(value)[:80]} is not a sequence of non-negative integers", file=md, tensor=fqn)
    return value


def _count(md: Path, value: Any, what: str, fqn: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConversionError(f"{what} {str(value)[:80]} is not a non-negative integer", file=md, tensor=fqn)
    return value


def _entry(md: Path, fqn: str, value: Any, keys: tuple[str, ...] | None) -> _Entry:
    f = _fields(md, value, "TensorStorageMetadata")
    props = _state(md, f.get("properties"), "TensorProperties")
    # TensorProperties pickles as (dtype, layout, requires_grad, memory format, pin_memory); older torch as its fields
    dtype = props[0] if isinstance(props, tuple) and props else props.get("dtype") if isinstance(props, dict) else None
    if not isinstance(dtype, TorchDType):
        raise ConversionError(f"its dtype is {str(dtype)[:80]}, not a torch dtype", file=md, tensor=fqn)
    shape = _ints(md, f.get("size"), "size", fqn)
    chunks = f.get("chunks")
    if not isinstance(chunks, list):
        raise ConversionError("has no list of chunks", file=md, tensor=fqn)
    out = []
    for c in chunks:
        cf = _fields(md, c, "ChunkStorageMetadata")
        out.append(_Chunk(_ints(md, cf.get("offsets"), "chunk offsets", fqn), _ints(md, cf.get("sizes"), "chunk sizes", fqn)))
    return _Entry(fqn, keys, dtype, shape, tuple(out))


def _stored(md: Path, key: Any, value: Any) -> tuple[tuple[str, tuple[int, ...] | None], _Stored]:
    k = _fields(md, key, "MetadataIndex")
    fqn = k.get("fqn")
    if not isinstance(fqn, str):
        raise ConversionError(f"a storage entry is keyed by {str(fqn)[:80]}, not a name", file=md)
    offset = k.get("offset")
    where = None if offset is None else _ints(md, offset, "storage offset", fqn)
    v = _fields(md, value, "_StorageInfo", _FS)
    name, transforms = v.get("relative_path"), v.get("transform_descriptors") or ()
    if not isinstance(name, str) or not isinstance(transforms, (list, tuple)) or not all(isinstance(t, str) for t in transforms):
        raise ConversionError(f"storage entry {str(v)[:120]} is not a file name and its transforms", file=md, tensor=fqn)
    stored = _Stored(name, _count(md, v.get("offset"), "storage offset", fqn), _count(md, v.get("length"), "storage length", fqn),
                     tuple(transforms))
    return (fqn, where), stored


def read_metadata(folder: Path) -> _Metadata:
    """``folder/.metadata``: the tensors, where their chunks are, and the other entries' names."""
    md = folder / METADATA
    try:
        size = md.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise ConversionError(f"is {size} bytes, over the {MAX_PICKLE_BYTES}-byte limit for a checkpoint's structure", file=md)
        data = md.read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read: {e.strerror}", file=md) from None
    root = _fields(md, read_pickle(data, md, DCP_GLOBALS), "Metadata")
    entries, planner, storage = root.get("state_dict_metadata"), root.get("planner_data"), root.get("storage_data")
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise ConversionError("has no state_dict_metadata and storage_data mappings: not a DCP checkpoint's metadata", file=md)
    if not isinstance(planner, dict):
        planner = {}
    tensors, others = {}, []
    for fqn, value in entries.items():
        if not isinstance(fqn, str):
            raise ConversionError(f"state_dict_metadata has the key {str(fqn)[:80]}, not a name", file=md)
        if isinstance(value, Inert) and value.qualname == f"{_META}.BytesStorageMetadata":
            others.append(fqn)
            continue
        path = planner.get(fqn)
        keys = tuple(map(str, path)) if isinstance(path, (tuple, list)) and path and all(
            isinstance(p, (str, int)) for p in path) else None
        tensors[fqn] = _entry(md, fqn, value, keys)
    stored = dict(_stored(md, k, v) for k, v in storage.items())
    version = root.get("version")
    return _Metadata(md, tensors, others, stored, version if isinstance(version, str) else None)


def _under(entry: _Entry, key: str) -> str | None:
    """The name of ``entry`` in the state dict saved under the dotted ``key``, if it is in it."""
    if entry.keys is None:  # saved without the planner's key paths: the flattened name is all there is
        return entry.fqn[len(key) + 1:] if entry.fqn.startswith(key + ".") else None
    parts = tuple(key.split("."))
    if len(entry.keys) > len(parts) and entry.keys[:len(parts)] == parts:
        return ".".join(entry.keys[len(parts):])
    return None


def model_state(meta: _Metadata, key: str | None) -> tuple[str, dict[str, _Entry]]:
    """The key holding the model's state (``""``: the top level) and its tensors by their names in it."""
    for k in (key,) if key else MODEL_KEYS:
        found = {name: e for e in meta.tensors.values() if (name := _under(e, k)) is not None}
        if found:
            return k, found
    top = {e.fqn: e for e in meta.tensors.values() if e.keys is None or len(e.keys) == 1} if not key else {}
    if top:
        return "", top
    heads = sorted({(e.keys or e.fqn.split("."))[0] for e in meta.tensors.values()} | {f.split(".")[0] for f in meta.others})
    listed = ", ".join(map(repr, heads[:12])) or "none"
    asked = f"no tensors under '{key}'" if key else f"no model state under {' or '.join(map(repr, MODEL_KEYS))} or at the top level"
    raise meta.error(f"{asked} (saved keys: {listed}); name the model's key with --dcp-key")


class _RankFiles:
    """The rank files chunks are read from, each checked once: inside the folder, present, its size."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sizes: dict[str, int] = {}

    def size(self, name: str, fqn: str) -> int:
        if name not in self.sizes:
            if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
                raise ConversionError(f"a chunk is stored in {name[:80]!r}, which is not a file name in the checkpoint folder",
                                      file=self.folder / METADATA, tensor=fqn)
            path = self.folder / name
            if not path.is_file():
                raise ConversionError("is missing: it holds a chunk of the tensor", file=path, tensor=fqn)
            if path.resolve().parent != self.folder.resolve():
                raise ConversionError("points outside the checkpoint folder", file=path, tensor=fqn)
            self.sizes[name] = path.stat().st_size
        return self.sizes[name]


def _chunk_source(meta: _Metadata, files: _RankFiles, entry: _Entry, dtype: str, chunk: _Chunk) -> SourceTensor:
    """The bytes of one chunk: the tensor in the torch.save archive DCP wrote at its place in a rank file."""
    stored = meta.stored.get((entry.fqn, chunk.offsets))
    if stored is None:
        raise meta.error(f"has no storage entry for its chunk at offsets {chunk.offsets}", entry.fqn)
    path = files.folder / stored.file
    if stored.transforms:
        raise ConversionError(f"its chunk at offsets {chunk.offsets} is stored through {', '.join(stored.transforms)}, "
                              "which pyconv does not decode (save without DCP's stream extensions)", file=path, tensor=entry.fqn)
    size = files.size(stored.file, entry.fqn)
    if stored.offset + stored.length > size:
        raise ConversionError(f"holds {size} bytes; the chunk at offsets {chunk.offsets} is at bytes "
                              f"[{stored.offset}, {stored.offset + stored.length}): truncated, or the chunk is outside the file",
                              file=path, tensor=entry.fqn)
    with path.open("rb") as f:
        head = os.pread(f.fileno(), len(_ZIP_MAGIC), stored.offset)
    if head != _ZIP_MAGIC:
        raise ConversionError(f"the chunk at offsets {chunk.offsets} is not a torch.save archive (DCP's safetensors "
                              "serialization is not read)", file=path, tensor=entry.fqn)
    try:
        tf = load(path, span=(stored.offset, stored.length))
    except ConversionError as e:
        raise ConversionError(f"the chunk at offsets {chunk.offsets}: {e.message}", file=path, tensor=entry.fqn) from None
    t = tf.root
    if not isinstance(t, PickledTensor) or t.dtype != dtype or t.shape != chunk.sizes:
        found = f"a {t.dtype} tensor of size {t.shape}" if isinstance(t, PickledTensor) else f"a {type(t).__name__}"
        raise ConversionError(f"the chunk at offsets {chunk.offsets} holds {found}; the metadata says {dtype} of size {chunk.sizes}",
                              file=path, tensor=entry.fqn)
    source = tf.source(entry.fqn, t)
    if source.strides is not None:
        raise ConversionError(f"the chunk at offsets {chunk.offsets} is saved as a strided view, not row after row",
                              file=path, tensor=entry.fqn)
    return source


def _check_chunks(meta: _Metadata, entry: _Entry) -> list[_Chunk]:
    """The chunks that hold elements, after checking they tile the tensor exactly."""
    shape, numel = entry.shape, math.prod(entry.shape)
    for c in entry.chunks:
        if len(c.offsets) != len(shape) or len(c.sizes) != len(shape) or any(
                o + n > d for o, n, d in zip(c.offsets, c.sizes, shape)):
            raise meta.error(f"its chunk at offsets {c.offsets} of size {c.sizes} is outside the tensor's size {shape}", entry.fqn)
    chunks = sorted((c for c in entry.chunks if c.numel), key=lambda c: c.offsets)
    for i, a in enumerate(chunks):  # sorted by the first offset: only the chunks starting before a ends can overlap it
        for b in chunks[i + 1:]:
            if shape and b.offsets[0] >= a.offsets[0] + a.sizes[0]:
                break
            if a.overlaps(b):
                raise meta.error(f"its chunks at offsets {a.offsets} and {b.offsets} overlap", entry.fqn)
    covered = sum(c.numel for c in chunks)
    if covered != numel:
        raise meta.error(f"its chunks hold {covered} of its {numel} elements: some are missing", entry.fqn)
    return chunks


def _assemble(meta: _Metadata, files: _RankFiles, entry: _Entry, name: str, dtype: str) -> SourceTensor:
    """The tensor as the row-major concatenation of pieces of its chunks' bytes."""
    shape = entry.shape
    chunks = _check_chunks(meta, entry)
    item = int(dtypes.info(dtype)["block_bytes"])
    # dims after ``split`` are whole in every chunk: a chunk is runs of contiguous elements, one per index of its dims before
    split = max((d for c in chunks for d in range(len(shape)) if c.sizes[d] != shape[d]), default=-1)
    pieces = sum(math.prod(c.sizes[:max(split, 0)]) for c in chunks)
    if pieces > MAX_PIECES:
        raise meta.error(f"its {len(chunks)} chunks cut it into {pieces} pieces, more than the {MAX_PIECES} pyconv assembles",
                         entry.fqn)
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    runs: list[tuple[int, int, SourceTensor, int]] = []  # (first element in the tensor, in the chunk, chunk, elements)
    for c in chunks:
        source = _chunk_source(meta, files, entry, dtype, c)
        run = math.prod(c.sizes[max(split, 0):])
        for j, index in enumerate(itertools.product(*(range(n) for n in c.sizes[:max(split, 0)]))):
            start = sum((o + i) * s for o, i, s in zip(c.offsets, index, strides)) + (
                c.offsets[split] * strides[split] if split >= 0 else 0)
            runs.append((start, j * run, source, run))
    runs.sort(key=lambda r: r[0])
    segments = tuple(seg for _start, at, source, n in runs for seg in byte_range(source.segments, at * item, (at + n) * item))
    return SourceTensor(name, dtype, shape, segments)


@dataclass
class DcpCheckpoint(StateDictCheckpoint):
    format_name = "dcp"
    dcp_key: str = ""                # where the model state was in the saved state ("": the top level)
    world_size: int = 1              # ranks that wrote files
    version: str | None = None       # DCP's metadata version
    ignored: int = 0                 # saved entries not part of the model state (optimizer, counters, ...)

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"dcp_key": self.dcp_key or "(top level)", "world_size": self.world_size,
                                 "entries_ignored": self.ignored}
        if self.version is not None:
            found["dcp_version"] = self.version
        return found


def open_dcp(path: Path, opts: ConvertOptions) -> DcpCheckpoint:
    """A DCP checkpoint folder as the model's tensors over its rank files."""
    meta = read_metadata(path)
    key, entries = model_state(meta, opts.source.dcp_key)
    files = _RankFiles(path)
    tensors = {}
    for name, entry in entries.items():
        dtype = entry.dtype.dtype
        if dtype is None:
            raise meta.error(f"torch.{entry.dtype.torch_name} tensors have no pyconv type", entry.fqn)
        tensors[name] = _assemble(meta, files, entry, name, dtype)
    ranks = {int(m.group(1)) for s in meta.stored.values() if (m := _RANK_FILE.fullmatch(s.file))}
    # trainers keep config.json and the tokenizer beside the checkpoint folder or one level up (a step folder's parent)
    side = None if (path / "config.json").is_file() or not (path.parent / "config.json").is_file() else path.parent
    return DcpCheckpoint(path, tensors, [meta.path, *(path / n for n in files.sizes)], config=read_config(side or path),
                         side_folder=side, dcp_key=key, world_size=max(len(ranks), 1), version=meta.version,
                         ignored=len(meta.tensors) + len(meta.others) - len(entries))
