"""Torch zip checkpoints (``torch.save`` since 1.6) read without torch and without running pickles.

A torch file is a zip archive: ``<archive>/data.pkl`` holds the object structure and every storage is
a member ``<archive>/data/<key>`` stored uncompressed. The pickle is read by an unpickler that knows
only the globals a state dict needs; any other global is refused by name before anything is called.
Tensors come out as ``PickledTensor`` records and become ``SourceTensor``s over the members' bytes.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from .. import dtypes
from ..errors import ConversionError
from ..options import ConvertOptions
from .base import Segment, SourceTensor
from .json_files import read_config
from .safetensors import read_shards
from .state_dict import StateDictCheckpoint

# File names the torch reader claims; a folder needs exactly one, or an index.
SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
DEFAULT_NAME = "pytorch_model.bin"  # preferred in a folder that also holds e.g. training_args.bin
# data.pkl is only the structure (a few bytes per tensor); more than this is a zip bomb or not a checkpoint.
MAX_PICKLE_BYTES = 1 << 30
# torch.save stores every member as it is; a compressed one that claims to expand more than this is a zip bomb
# (a pickle of names and numbers deflates about tenfold).
MAX_EXPANSION = 100
# Nesting of the non-tensor values kept beside a state dict (nanoGPT's model_args and config are flat),
# and of tuples anywhere in a pickle (a state dict's are torch.Size and the rebuild arguments).
MAX_PLAIN_DEPTH = 32
MAX_TUPLE_DEPTH = 32
# Keys under which training scripts nest the model's state dict, most common first.
STATE_DICT_KEYS = ("model", "state_dict", "module", "model_state_dict", "model_state")

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then name and extra lengths at byte 26
_LOCAL_MAGIC = b"PK\x03\x04"
# Storage classes torch pickles by name (torch.storage's legacy map); the rest have no pyconv type.
STORAGE_TYPES = {
    "DoubleStorage": "f64", "FloatStorage": "f32", "HalfStorage": "f16", "BFloat16Storage": "bf16",
    "LongStorage": "i64", "IntStorage": "i32", "ShortStorage": "i16", "CharStorage": "i8",
    "ByteStorage": "u8", "BoolStorage": "bool",
}
# dtypes that torch pickles as ``torch.<name>`` next to an untyped storage (``_rebuild_tensor_v3``).
_TORCH_DTYPES = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64", "int32": "i32",
    "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool", "uint16": "u16", "uint32": "u32",
    "uint64": "u64", "float8_e4m3fn": "f8_e4m3", "float8_e5m2": "f8_e5m2",
}
# torch 2.13's other dtypes: named in the refusal of a tensor that has one
NO_TYPE_DTYPES = (
    "complex32", "complex64", "complex128", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16", "qint8", "qint32", "quint8", "quint2x4", "quint4x2",
    *(f"{sign}int{bits}" for sign in ("", "u") for bits in range(1, 8)))
# Globals that are torch's own but describe something pyconv cannot express: named in the refusal.
_UNSUPPORTED = {
    ("torch._utils", "_rebuild_sparse_tensor"): "sparse tensors",
    ("torch._utils", "_rebuild_qtensor"): "quantized tensors",
    ("torch._utils", "_rebuild_nested_tensor"): "nested tensors",
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): "meta tensors (they have no data)",
    ("torch._utils", "_rebuild_wrapper_subclass"): "tensor subclasses",
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): "tensors stored as numpy arrays",
    **{("torch", n): "complex or quantized storages" for n in (
        "ComplexDoubleStorage", "ComplexFloatStorage", "QInt8Storage", "QInt32Storage", "QUInt8Storage",
        "QUInt4x2Storage", "QUInt2x4Storage")},
}


class PickleRefused(Exception):
    """The pickle asks for something pyconv does not do; the message says what."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: str | None  # None: torch.UntypedStorage, bytes whose type the tensor gives


@dataclass(frozen=True, slots=True)
class TorchDType:
    """A ``torch.<name>`` dtype as a pickle names it."""

    dtype: str | None  # None: a torch dtype pyconv has no type for
    torch_name: str


@dataclass(frozen=True, slots=True)
class _TensorType:
    name: str  # torch.Tensor or torch.nn.Parameter, as _rebuild_from_type_v2 names them


@dataclass(frozen=True, eq=False, slots=True)
class Storage:
    key: str
    dtype: str | None
    nbytes: int  # declared by the pickle; checked against the zip member


@dataclass(frozen=True, eq=False, slots=True)
class PickledTensor:
    """A tensor as the pickle describes it: a strided view of a storage, in elements of ``dtype``."""

    storage: Storage
    dtype: str
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Inert:
    """Stands in for a class the pickle names but pyconv never imports: arguments and state are
    kept as plain data, nothing of the original class runs."""

    qualname: ClassVar[str] = "?"

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def inert_class(module: str, name: str) -> type[Inert]:
    return type(name, (Inert,), {"qualname": f"{module}.{name}"})


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise PickleRefused(f"tensor {what} {value!r} is not a sequence of non-negative integers")
    return tuple(value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None, metadata: Any) -> PickledTensor:
    if not isinstance(storage, Storage):
        raise PickleRefused(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    if dtype is None:
        raise PickleRefused("a tensor over an untyped storage names no dtype")
    if storage.dtype is not None and storage.dtype != dtype:
        raise PickleRefused(f"a {dtype} tensor views a {storage.dtype} storage")
    if any(metadata.values() if isinstance(metadata, dict) else [metadata]):
        raise PickleRefused(f"a tensor carries conjugate/negative bits ({metadata!r}), which pyconv cannot apply")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise PickleRefused(f"tensor size {shape} and stride {strides} differ in length")
    # zero strides let a few stored bytes stand for any number of elements; the output must still fit a file
    if math.prod(shape) * dtypes.info(dtype)["block_bytes"] >= 1 << 63:
        raise PickleRefused(f"a {dtype} tensor of size {shape} has more bytes than a file can hold")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise PickleRefused(f"tensor storage offset {offset!r} is not a non-negative integer")
    return PickledTensor(storage, dtype, offset, shape, strides)


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, _requires_grad: Any = False, _hooks: Any = None,
                metadata: Any = None) -> PickledTensor:
    return _tensor(storage, offset, size, stride, storage.dtype if isinstance(storage, Storage) else None, metadata)


def _rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, _requires_grad: Any, _hooks: Any, dtype: Any,
                metadata: Any = None) -> PickledTensor:
    if not isinstance(dtype, TorchDType):
        raise PickleRefused(f"tensor dtype {dtype!r} is not a torch dtype")
    if dtype.dtype is None:
        raise PickleRefused(f"torch.{dtype.torch_name} tensors have no pyconv type")
    return _tensor(storage, offset, size, stride, dtype.dtype, metadata)


def _parameter(data: Any, *_rest: Any) -> Any:
    # a Parameter is its data; requires_grad, hooks and python attributes do not change the bytes
    if not isinstance(data, PickledTensor):
        raise PickleRefused(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _from_type(func: Any, new_type: Any, args: Any, _state: Any) -> Any:
    # tensors with python attributes (DeepSpeed's ds_id) are pickled through this helper
    if func not in (_rebuild_v2, _rebuild_v3) or not isinstance(new_type, _TensorType) or not isinstance(args, tuple):
        raise PickleRefused("_rebuild_from_type_v2 is asked to build something other than a plain tensor")
    return func(*args)


def _size(*args: Any) -> tuple[int, ...]:
    return _ints(args[0] if args else (), "size")


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # protocol-2 pickles spell bytes objects as _codecs.encode(text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PickleRefused(f"_codecs.encode is called with encoding {encoding!r}")
    return text.encode("latin1")


BASE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _from_type,
    ("torch", "Size"): _size,
    ("torch", "Tensor"): _TensorType("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TensorType("torch.nn.Parameter"),
    ("torch.storage", "UntypedStorage"): _StorageType(None),
    ("_codecs", "encode"): _latin1,
    **{("torch", n): _StorageType(d) for n, d in STORAGE_TYPES.items()},
    **{("torch", n): TorchDType(d, n) for n, d in _TORCH_DTYPES.items()},
    **{("torch", n): TorchDType(None, n) for n in NO_TYPE_DTYPES},
}


def _refuse_extension(_self: Any) -> None:
    # EXT opcodes name globals through copyreg's registry, and both unpicklers cache what they found
    # process-wide: an entry cached by anyone else's unpickling would bypass find_class.
    raise PickleRefused("it uses a copyreg extension code (EXT opcode), which a state dict never does")


def _build(self: Any) -> None:
    # BUILD sets attributes; on anything but a stub or an OrderedDict (whose _metadata a state dict
    # keeps) it could rewire the very functions this unpickler hands out, e.g. their __defaults__.
    target = self.stack[-2]
    if not isinstance(target, Inert) and type(target) is not OrderedDict:
        raise PickleRefused(f"it sets attributes of {type(target).__name__} {str(target)[:60]!r}, "
                            "which a state dict never does")
    pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]


def _measured(load: Callable[[Any], None]) -> Callable[[Any], None]:
    """A tuple-making opcode that also records how deep the new tuple nests tuples. Hashing a tuple
    recurses in C without Python's recursion limit, so a key nested a few hundred thousand deep (which
    the unpickler builds in a loop) would crash the process the moment it went into a dict."""
    def run(self: Any) -> None:
        load(self)
        made = self.stack[-1]
        depth = 1 + max((self.tuple_depths[id(item)][1] for item in made if id(item) in self.tuple_depths), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise PickleRefused(f"it nests tuples more than {MAX_TUPLE_DEPTH} deep, which a state dict never does")
        self.tuple_depths[id(made)] = (made, depth)  # the tuple is kept so that its id stays its own
    return run


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler, whose opcode table can be changed (the C one's cannot)."""

    dispatch: ClassVar[dict[int, Any]] = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _build,
                **{op[0]: _refuse_extension for op in (pickle.EXT1, pickle.EXT2, pickle.EXT4)},
                **{op[0]: _measured(pickle._Unpickler.dispatch[op[0]])
                   for op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)}}

    def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any]) -> None:
        super().__init__(file, encoding="utf-8")
        self._allowed = allowed
        self.storages: dict[str, Storage] = {}
        self.tuple_depths: dict[int, tuple[tuple[Any, ...], int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Every global a pickle can name (GLOBAL, STACK_GLOBAL, INST) comes through here.
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if (module, name) in _UNSUPPORTED:
            raise PickleRefused(f"it holds {_UNSUPPORTED[(module, name)]} ({module}.{name}), which pyconv cannot convert")
        raise PickleRefused(f"it names the global '{module}.{name}', which is not part of a state dict; "
                            "pyconv never runs code from pickles")

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise PickleRefused(f"unknown persistent id {str(pid)[:80]!r}")
        _tag, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise PickleRefused(f"malformed storage reference {str(pid)[:80]!r}")
        nbytes = numel * (dtypes.info(kind.dtype)["block_bytes"] if kind.dtype else 1)
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = Storage(key, kind.dtype, nbytes)
        elif (known.dtype, known.nbytes) != (kind.dtype, nbytes):
            raise PickleRefused(f"storage {key} is referenced as {known.dtype} and as {kind.dtype}")
        return known


@dataclass
class TorchFile:
    """One torch zip file: its unpickled structure (``root``) and where each storage's bytes are."""

    path: Path
    root: Any
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # storage key -> (offset, nbytes)

    def source(self, name: str, t: PickledTensor) -> SourceTensor:
        """``t`` as a SourceTensor over the smallest byte range of its storage that it reads."""
        start, size = self.spans[t.storage.key]
        item = int(dtypes.info(t.dtype)["block_bytes"])
        if t.numel == 0:
            return SourceTensor(name, t.dtype, t.shape, ())
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.strides))
        if (last + 1) * item > size:
            raise ConversionError(f"reads element {last} of a storage holding {size // item} {t.dtype} elements", file=self.path, tensor=name)
        row_major = math.prod(t.shape) == 1 or all(
            s == math.prod(t.shape[d + 1:]) for d, (n, s) in enumerate(zip(t.shape, t.strides)) if n > 1)
        span = Segment(self.path, start + t.offset * item, (last - t.offset + 1) * item)
        if row_major:
            return SourceTensor(name, t.dtype, t.shape, (span,))
        return SourceTensor(name, t.dtype, t.shape, (span,), 0, t.strides)


def _refuse_non_zip(path: Path, head: bytes) -> ConversionError:
    if head[:1] == b"\x80" or head[257:262] == b"ustar":
        return ConversionError(
            "legacy torch serialization (saved by torch < 1.6 or with _use_new_zipfile_serialization=False), "
            "which pyconv does not read: re-save it in the zip format with "
            "torch.save(torch.load(path, weights_only=True), new_path)", file=path)
    return ConversionError("not a torch checkpoint (neither a zip archive nor a legacy torch file)", file=path)


def _archive_prefix(path: Path, names: list[str]) -> str:
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ConversionError(f"a torch zip file has one '<name>/data.pkl', this one has {len(pickles)}", file=path)
    return pickles[0][: -len("data.pkl")]


def _member_span(path: Path, fd: int, base: int, size: int, info: zipfile.ZipInfo) -> tuple[int, int]:
    if info.compress_type != zipfile.ZIP_STORED:
        raise ConversionError(f"zip member '{info.filename}' is compressed; pyconv maps tensor bytes straight from "
                              "the file and needs them stored (torch.save writes them so): re-save it with torch.save", file=path)
    if info.flag_bits & 0x1:
        raise ConversionError(f"zip member '{info.filename}' is encrypted", file=path)
    head = os.pread(fd, _LOCAL_HEADER.size, base + info.header_offset)
    if len(head) != _LOCAL_HEADER.size:
        raise ConversionError(f"zip member '{info.filename}' starts past the end of the file", file=path)
    magic, name_len, extra_len = _LOCAL_HEADER.unpack(head)
    if magic != _LOCAL_MAGIC:
        raise ConversionError(f"zip member '{info.filename}' has no local header where the directory says", file=path)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if info.file_size != info.compress_size or start + info.file_size > size:
        raise ConversionError(f"zip member '{info.filename}' runs past the end of the file: truncated", file=path)
    return base + start, info.file_size


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of an open file as a file of their own: a zip archive stored inside
    another file (a torch.save blob in a DCP rank file) is read through one."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._at = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._at, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._at = base + offset
        return self._at

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self._size - self._at))
        data = os.pread(self._f.fileno(), n, self._start + self._at) if n else b""
        buffer[:len(data)] = data
        self._at += len(data)
        return len(data)


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_EXPANSION * max(info.compress_size, 1):
        raise ConversionError(f"zip member '{info.filename}' expands {info.compress_size} bytes to {info.file_size}: "
                              "a zip bomb, not a checkpoint", file=path)
    try:
        return archive.read(info)
    except Exception as e:  # CRC, truncation, unknown compression: the file is broken either way
        raise ConversionError(f"cannot read zip member '{info.filename}' ({type(e).__name__}: {e})", file=path) from None


def _unpickled(unpickler: _Unpickler, path: Path) -> Any:
    try:
        return unpickler.load()
    except PickleRefused as e:
        raise ConversionError(f"refused: {e}", file=path) from None
    except Exception as e:  # a malformed pickle can fail in many ways; all are the user's file
        raise ConversionError(f"cannot read its pickle ({type(e).__name__}: {e})", file=path) from None


def read_pickle(data: bytes, path: Path, extra_globals: Mapping[tuple[str, str], Any]) -> Any:
    """A plain pickle (``path``'s bytes ``data``, not a torch zip) read by the same restricted unpickler,
    allowing a state dict's globals and ``extra_globals``."""
    return _unpickled(_Unpickler(io.BytesIO(data), {**BASE_GLOBALS, **extra_globals}), path)


def load(path: Path, extra_globals: Mapping[tuple[str, str], Any] | None = None,
         span: tuple[int, int] | None = None) -> TorchFile:
    """Unpickle ``path``'s structure with the allowed globals and locate every storage it uses; with
    ``span`` (offset, length), of the torch file stored at those bytes of ``path``.

    Tensor bytes are never read; only the zip directory and data.pkl are.
    """
    try:
        f = path.open("rb")
    except OSError as e:
        raise ConversionError(f"cannot read: {e.strerror}", file=path) from None
    with f:
        fd = f.fileno()
        base, size = span if span is not None else (0, os.fstat(fd).st_size)
        view: BinaryIO = f if span is None else io.BufferedReader(_Window(f, base, size))
        try:
            if not zipfile.is_zipfile(view):
                raise _refuse_non_zip(path, os.pread(fd, min(512, size), base))
            archive = zipfile.ZipFile(view)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:  # the last: a version zipfile lacks
            raise ConversionError(f"broken zip directory ({e})", file=path) from None
        infos = {i.filename: i for i in archive.infolist()}
        prefix = _archive_prefix(path, list(infos))
        order = infos.get(prefix + "byteorder")
        if order is not None and _read_member(path, archive, order).strip() != b"little":
            raise ConversionError("saved on a big-endian machine; pyconv reads little-endian tensors only", file=path)
        pkl = infos[prefix + "data.pkl"]
        if pkl.file_size > MAX_PICKLE_BYTES:
            raise ConversionError(f"data.pkl is {pkl.file_size} bytes, over the {MAX_PICKLE_BYTES}-byte limit for "
                                  "a checkpoint's structure", file=path)
        unpickler = _Unpickler(io.BytesIO(_read_member(path, archive, pkl)), {**BASE_GLOBALS, **(extra_globals or {})})
        root = _unpickled(unpickler, path)
        spans = {}
        for key, storage in unpickler.storages.items():
            info = infos.get(f"{prefix}data/{key}")
            if info is None:
                raise ConversionError(f"storage '{key}' named by the pickle has no zip member", file=path)
            spans[key] = _member_span(path, fd, base, size, info)
            if spans[key][1] < storage.nbytes:
                raise ConversionError(f"storage '{key}' holds {spans[key][1]} bytes, the pickle says {storage.nbytes}", file=path)
    return TorchFile(path, root, spans)


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, PickledTensor) for k, v in value.items()))


def _plain(value: Any, depth: int = 0) -> bool:
    """Small JSON-like data (numbers, strings, lists, string-keyed dicts): safe to hand to other code.
    Deeper than ``MAX_PLAIN_DEPTH`` is not small: a pickle nests as deep as it likes without recursing,
    everything that walks the value afterwards recurses."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth >= MAX_PLAIN_DEPTH:
        return False
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def state_dict_of(tf: TorchFile) -> tuple[dict[str, PickledTensor], dict[str, Any]]:
    """The state dict in a torch file, and the small non-tensor values around it.

    A file is a state dict, or a dict holding one under a usual key ("model", "state_dict", ...)
    or as its only state-dict value (nanoGPT's ``{"model": ..., "model_args": ...}``).
    """
    root = tf.root
    if _is_state_dict(root):
        return dict(root), {}
    if not isinstance(root, dict):
        raise ConversionError(f"holds a {type(root).__name__}, not a state dict", file=tf.path)
    found = [k for k in STATE_DICT_KEYS if _is_state_dict(root.get(k))] or [k for k, v in root.items() if _is_state_dict(v)]
    if len(found) != 1 and not (found and found[0] in STATE_DICT_KEYS):
        keys = ", ".join(map(repr, list(root)[:12]))
        what = "no state dict (a dict of tensors)" if not found else f"several state dicts ({', '.join(map(repr, found))})"
        raise ConversionError(f"holds {what} among its keys {keys}", file=tf.path)
    saved = {k: v for k, v in root.items() if k != found[0] and isinstance(k, str) and _plain(v)}
    return dict(root[found[0]]), saved


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)


def find_index(folder: Path) -> Path | None:
    indexes = sorted(p for s in SUFFIXES for p in folder.glob(f"*{s}.index.json"))
    return indexes[0] if len(indexes) == 1 else None


def _single_weight_file(folder: Path) -> Path | None:
    files = _weight_files(folder)
    named = [p for p in files if p.name == DEFAULT_NAME]
    return named[0] if named else files[0] if len(files) == 1 else None


def recognises(path: Path) -> bool:
    if path.is_file():
        return path.suffix in SUFFIXES
    return path.is_dir() and (find_index(path) is not None or _single_weight_file(path) is not None)


def read_torch_file(path: Path) -> tuple[dict[str, SourceTensor], dict[str, Any]]:
    """The state dict of one torch file as SourceTensors, and its small non-tensor values."""
    tf = load(path)
    found, saved = state_dict_of(tf)
    return {name: tf.source(name, t) for name, t in found.items()}, saved


@dataclass
class TorchCheckpoint(StateDictCheckpoint):
    format_name = "torch"
    # the small plain values saved beside the state dict (nanoGPT's model_args, iter_num, config)
    saved_values: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return dict(self.saved_values)


def open_torch(path: Path, opts: ConvertOptions) -> TorchCheckpoint:
    """A torch file, a folder with one, or a sharded folder with ``pytorch_model.bin.index.json``."""
    if path.is_file():
        tensors, saved = read_torch_file(path)
        return TorchCheckpoint(path, tensors, [path], config=read_config(path.parent), saved_values=saved)
    index = find_index(path)
    if index is not None:
        tensors, shards, saved = read_shards(index, read_torch_file)
        return TorchCheckpoint(path, tensors, shards, config=read_config(path), saved_values=saved)
    single = _single_weight_file(path)
    if single is None:
        raise ConversionError("no index and not exactly one torch file in this folder: name the file", file=path)
    ck = open_torch(single, opts)
    ck.path = path
    return ck
