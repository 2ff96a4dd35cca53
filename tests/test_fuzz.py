"""Every reader fuzzed: inputs a little or a lot wrong must end in one ConversionError line, or read into
tensors that stay inside their files; never another exception, a hang or an allocation sized by a lie.

Each test builds its inputs from structure (headers, pickles, dictionaries, configs) with hypothesis,
so most examples get past the first check and reach the deeper ones. Every read runs under an address
space cap (``corpus.memory_cap``) and each test under a time limit. The suite's run is bounded (about a
minute); fuzz for longer with

    PYCONV_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py     (or: make fuzz)

which raises every test's example count and lifts the time limit. Hypothesis keeps failing examples in
.hypothesis/ and replays them first on the next run.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyconv
from pyconv import dtypes
from pyconv.compression import opened
from pyconv.errors import ConversionError
from pyconv.options import ConvertOptions
from pyconv.sources import open_checkpoint
from pyconv.sources.checkpoint import Checkpoint
from pyconv.sources.gguf import read_gguf
from pyconv.sources.safetensors import read_file

from .corpus import (
    LLAMA_CONFIG,
    Built,
    Call,
    Global,
    StorageRef,
    Workshop,
    gguf_str,
    gguf_tensor_info,
    memory_cap,
    pickle_bytes,
    rebuilt_tensor,
    safetensors_bytes,
    st_entry,
    tiny_llama,
    torch_zip,
    zst_bytes,
)

EXAMPLES = int(os.environ.get("PYCONV_FUZZ_EXAMPLES", "0"))
MEMORY = 512 << 20  # more than any of these small inputs can honestly need
T = TypeVar("T")


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for one reader: ``examples`` in the suite, PYCONV_FUZZ_EXAMPLES on demand."""
    def wrap(test: Callable[..., None]) -> Callable[..., None]:
        bounded = settings(max_examples=EXAMPLES or examples, deadline=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])(test)
        return pytest.mark.timeout(0 if EXAMPLES else 120)(bounded)
    return wrap


def outcome(read: Callable[[], T]) -> T | None:
    """``read()`` under the memory cap: what it returned, or None after one clean ConversionError line."""
    with memory_cap(MEMORY):
        try:
            return read()
        except ConversionError as e:
            text = str(e)
            assert "\n" not in text and len(text) < 2000, text[:3000]
            return None


def inside_files(tensors: dict[str, Any]) -> None:
    """What a reader accepted points only at bytes that exist."""
    sizes: dict[Path, int] = {}
    for t in tensors.values():
        for s in t.segments:
            size = sizes.setdefault(s.path, s.path.stat().st_size)
            assert s.offset >= 0 and s.nbytes >= 0 and s.offset + s.nbytes <= size, (t.name, s)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """A fresh empty folder per hypothesis example (tmp_path is one folder for all of them)."""
    count = 0

    def make() -> Path:
        nonlocal count
        count += 1
        folder = tmp_path / f"x{count}"
        folder.mkdir()
        return folder

    yield make


# --- values of every JSON/YAML/pickle type, biased to the edges readers get wrong ------------------

EDGE_INTS = st.sampled_from([0, 1, -1, 2, 7, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30])
SCALARS = st.one_of(st.none(), st.booleans(), EDGE_INTS, st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


# --- safetensors header and index.json -------------------------------------------------------------

@fuzz(300)
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(list(b'0123456789-[]{}",:eE. FIU'))), min_size=1, max_size=6))
def test_safetensors_header_text_edits(scratch: Callable[[], Path], edits: list[tuple[int, int]]) -> None:
    """A real header with a few characters of its JSON changed: numbers, brackets and quotes land where
    the structure checks must catch them."""
    header = {"__metadata__": {"format": "pt"}, "a": st_entry("F32", [2, 3], 0, 24), "b": st_entry("BF16", [4], 24, 32),
              "c": st_entry("I64", [1], 32, 40)}
    text = bytearray(json.dumps(header).encode())
    for at, char in edits:
        text[at % len(text)] = char
    path = scratch() / "m.safetensors"
    path.write_bytes(safetensors_bytes(bytes(text), bytes(range(40))))
    found = outcome(lambda: read_file(path))
    if found is not None:
        inside_files(found[0])


SHARD_NAMES = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "../outside.safetensors",
               "/etc/passwd", "sub/../model-00001-of-00002.safetensors", "sub/../../outside.safetensors", "", ".", "..",
               "link.safetensors", "dirlink/outside.safetensors", "missing.safetensors", "a\\b.safetensors", "\x00"]


@fuzz(200)
@given(weight_map=st.one_of(st.dictionaries(st.sampled_from(["a", "b", "c", "zz"]), st.one_of(st.sampled_from(SHARD_NAMES), JSON_VALUES),
                                            max_size=4), JSON_VALUES),
       extra=st.dictionaries(st.sampled_from(["metadata", "weight_map_", "x"]), JSON_VALUES, max_size=2))
def test_safetensors_index(scratch: Callable[[], Path], weight_map: Any, extra: dict[str, Any]) -> None:
    root = scratch()
    (root / "outside.safetensors").write_bytes(safetensors_bytes({"a": st_entry("F32", [1], 0, 4)}, bytes(4)))
    folder = root / "model"
    folder.mkdir()
    (folder / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes({"a": st_entry("F32", [2], 0, 8)}, bytes(8)))
    (folder / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes({"b": st_entry("F16", [2], 0, 4)}, bytes(4)))
    (folder / "link.safetensors").symlink_to(root / "outside.safetensors")
    (folder / "dirlink").symlink_to(root)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map, **extra}))
    ck = outcome(lambda: open_checkpoint(folder))
    if ck is not None:
        inside_files(ck.tensors)
        assert all(f.resolve().is_relative_to(folder.resolve()) for f in ck.files), ck.files


# --- GGUF, built from its structure --------------------------------------------------------------

GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
LYING_COUNTS = st.one_of(st.integers(0, 6), st.sampled_from([2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1]))


@st.composite
def gguf_value(draw: st.DrawFn, depth: int = 0) -> tuple[int, bytes]:
    """(value type, encoded value), sometimes with a count that lies or a type that does not exist."""
    kind = draw(often(st.sampled_from([*GGUF_SCALAR_SIZES, 8, 9]), st.sampled_from([13, 99, 2**32 - 1])))
    if kind in GGUF_SCALAR_SIZES:
        return kind, draw(st.binary(min_size=GGUF_SCALAR_SIZES[kind], max_size=GGUF_SCALAR_SIZES[kind]))
    if kind == 8:
        text = draw(st.binary(max_size=12))
        return kind, struct.pack("<Q", draw(often(st.just(len(text)), LYING_COUNTS))) + text
    if kind == 9 and depth == 0:
        sub, first = draw(gguf_value(depth=1))
        items = [first] + [draw(gguf_value(depth=1))[1] for _ in range(draw(st.integers(0, 3)))]
        count = draw(often(st.just(len(items)), LYING_COUNTS))
        return kind, struct.pack("<IQ", sub, count) + b"".join(items)
    return kind, draw(st.binary(max_size=16))


@st.composite
def gguf_blob(draw: st.DrawFn) -> bytes:
    kvs = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([b"general.alignment", b"general.architecture", b"k", b"", b"a.b", b"x" * 200]))
        kind, payload = draw(gguf_value())
        kvs.append(gguf_str(key) + struct.pack("<I", kind) + payload)
    tensors = []
    for i in range(draw(st.integers(0, 3))):
        dims = draw(often(st.lists(st.sampled_from([1, 2, 32, 256]), min_size=1, max_size=4),
                          st.lists(st.one_of(st.sampled_from([0, 1, 2, 32, 256]), LYING_COUNTS), min_size=0, max_size=5)))
        ggml_type = draw(often(st.sampled_from([0, 1, 8, 30, 34, 35]), st.one_of(st.integers(0, 50), st.just(2**32 - 1))))
        offset = draw(often(st.sampled_from([0, 32, 64, 96, 128, 1024]), LYING_COUNTS))
        name = draw(st.sampled_from([b"t", b"u", b"t" * 300, f"t{i}".encode()]))
        tensors.append(gguf_tensor_info(name, dims, ggml_type, offset))
    version = draw(often(st.sampled_from([3, 2]), st.sampled_from([1, 4, 2**32 - 1])))
    n_tensors = draw(often(st.just(len(tensors)), LYING_COUNTS))
    n_kv = draw(often(st.just(len(kvs)), LYING_COUNTS))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(tensors)
    cut = draw(st.one_of(st.none(), st.integers(0, len(head))))
    blob = head + bytes(-len(head) % 32) + bytes(draw(st.sampled_from([0, 32, 256, 4096])))
    return blob if cut is None else blob[:cut]


@fuzz(400)
@given(blob=gguf_blob())
def test_gguf_structure(scratch: Callable[[], Path], blob: bytes) -> None:
    path = scratch() / "m.gguf"
    path.write_bytes(blob)
    g = outcome(lambda: read_gguf(path))
    if g is not None:
        inside_files(g.tensors)
        for t in g.tensors.values():
            assert t.nbytes == dtypes.nbytes(t.dtype, math.prod(t.shape))


# --- zstd-compressed inputs ----------------------------------------------------------------------

@fuzz(200)
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 255)), max_size=6), cut=st.none() | st.integers(0, 64),
       frames=st.integers(1, 3))
def test_zst_input_frames(scratch: Callable[[], Path], edits: list[tuple[int, int]], cut: int | None, frames: int) -> None:
    """A safetensors file compressed in one or more frames, with bytes changed or the end cut off."""
    blob = bytearray(b"".join(zst_bytes(part) for part in _split(safetensors_bytes({"w": st_entry("F32", [64], 0, 256)},
                                                                                    bytes(range(256))), frames)))
    for at, value in edits:
        blob[at % len(blob)] = value
    folder = scratch()
    path = folder / "model.safetensors.zst"
    path.write_bytes(bytes(blob if cut is None else blob[: len(blob) - cut]))

    def read() -> Checkpoint:
        with opened(path, ConvertOptions(), near=folder) as ck:
            return ck
    outcome(read)
    assert [p.name for p in folder.iterdir()] == ["model.safetensors.zst"]  # the temporary copy is gone


def _split(data: bytes, parts: int) -> list[bytes]:
    step = -(-len(data) // parts)
    return [data[i:i + step] for i in range(0, len(data), step)]


# --- torch zip + pickle ----------------------------------------------------------------------------

STORAGE_KINDS = ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "ByteStorage", "BoolStorage",
                 "ComplexFloatStorage", "QInt8Storage", "NotAStorage"]
GLOBALS = [("collections", "OrderedDict"), ("torch", "Size"), ("torch._utils", "_rebuild_parameter"), ("torch", "float16"),
           ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_sparse_tensor"), ("_codecs", "encode"),
           ("builtins", "eval"), ("os", "system"), ("numpy.core.multiarray", "_reconstruct"), ("torch", "Tensor")]


def often(usual: st.SearchStrategy[T], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` four times in five, ``odd`` otherwise: most examples get past the first check."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 4 else usual)


@st.composite
def pickled_tensor(draw: st.DrawFn) -> Any:
    shape = draw(st.lists(st.integers(0, 4), max_size=3).map(tuple))
    contiguous = tuple(math.prod(shape[d + 1:]) for d in range(len(shape)))
    offset = draw(often(st.integers(0, 3), st.one_of(EDGE_INTS, st.booleans(), st.text(max_size=2))))
    numel = draw(often(st.just((offset if isinstance(offset, int) else 0) + math.prod(shape)),
                       st.one_of(st.integers(0, 8), LYING_COUNTS)))
    kind = draw(often(st.sampled_from(STORAGE_KINDS[:6]), st.sampled_from(STORAGE_KINDS[6:])))
    storage = StorageRef(draw(st.sampled_from(["0", "1", "2"])), numel, kind)
    ints = st.one_of(st.integers(0, 5), EDGE_INTS, st.booleans(), st.text(max_size=2))
    size = draw(often(st.just(shape), st.one_of(st.lists(ints, max_size=4).map(tuple), JSON_VALUES)))
    stride = draw(often(st.one_of(st.just(contiguous), st.just(tuple(reversed(contiguous)))),
                        st.one_of(st.lists(ints, max_size=4).map(tuple), JSON_VALUES)))
    tensor = rebuilt_tensor(storage, offset, size, stride)
    if draw(st.integers(0, 4)) < 4:
        return tensor
    func = Global(*draw(st.sampled_from(GLOBALS)))
    return Call(func, *draw(st.lists(st.one_of(st.just(tensor), JSON_VALUES), max_size=3)))


@st.composite
def pickle_root(draw: st.DrawFn) -> Any:
    tensors = st.dictionaries(st.sampled_from(["w", "b", "layer.0.w", ""]), pickled_tensor(), min_size=1, max_size=4)
    state = draw(tensors)
    shape = draw(st.sampled_from(["plain", "plain", "nested", "nanogpt", "nanogpt", "list", "junk"]))
    if shape == "plain":
        return state
    if shape == "nested":
        return {draw(st.sampled_from(["model", "state_dict", "module", "x"])): state, "other": draw(JSON_VALUES)}
    if shape == "nanogpt":
        return {"model": state, "model_args": draw(JSON_VALUES), "iter_num": draw(JSON_VALUES), "opt": draw(tensors)}
    if shape == "list":
        return [state]
    return draw(JSON_VALUES)


@fuzz(300)
@given(root=pickle_root(), sizes=st.lists(often(st.just(64), st.integers(-1, 70)), min_size=3, max_size=3))
def test_torch_pickle_structure(scratch: Callable[[], Path], root: Any, sizes: list[int]) -> None:
    """Pickles written as torch.save writes them, with every tensor argument, storage and global drawn;
    storages "0".."2" hold ``sizes`` bytes (-1: missing)."""
    storages = {str(key): bytes(n) for key, n in enumerate(sizes) if n >= 0}
    path = torch_zip(scratch() / "m.pt", pickle_bytes(root), storages)
    ck = outcome(lambda: open_checkpoint(path))
    if ck is not None:
        inside_files(ck.tensors)
        json.dumps(ck.details())  # what is kept beside the tensors is plain data


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real torch.save file with views, shared storage, a parameter and nanoGPT-style extras."""
    import torch

    base = torch.arange(24, dtype=torch.float32)
    sd = {"w": base.view(4, 6), "t": base.view(4, 6).t(), "s": base[3:9], "p": torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16)),
          "i": torch.tensor([1, 2], dtype=torch.int64)}
    path = tmp_path_factory.mktemp("torch") / "m.pt"
    torch.save({"model": sd, "model_args": {"n_layer": 2}, "iter_num": 5}, path)
    return path.read_bytes()


@fuzz(300)
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8), cut=st.none() | st.integers(0, 4096))
def test_torch_file_byte_edits(scratch: Callable[[], Path], torch_file: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    """Bytes of a real torch.save file changed: the zip directory, local headers and the pickle itself."""
    blob = bytearray(torch_file)
    for at, value in edits:
        blob[at % len(blob)] = value
    path = scratch() / "m.pt"
    path.write_bytes(bytes(blob if cut is None else blob[: len(blob) - cut]))
    ck = outcome(lambda: open_checkpoint(path))
    if ck is not None:
        inside_files(ck.tensors)


# --- DeepSpeed ZeRO metadata -----------------------------------------------------------------------

def zero_tensor(key: str, values: int, dtype: str = "FloatStorage", shape: Any = None) -> Any:
    return rebuilt_tensor(StorageRef(key, values, dtype), 0, (values,) if shape is None else shape, (1,) if shape is None else (0,) * len(shape))


@st.composite
def zero_checkpoint(draw: st.DrawFn) -> tuple[str, int, dict[str, Any], list[dict[str, Any]]]:
    """(layout, world size, model states, optimizer states per rank) of a small checkpoint whose fields
    are, each with some chance, replaced by anything."""
    layout = draw(st.sampled_from(["stage2", "stage3"]))
    ws = draw(st.sampled_from([1, 2]))
    shapes = {"w": (2, 3), "b": (2,)}
    size = lambda s: Call(Global("torch", "Size"), s)  # noqa: E731 - torch.Size as torch pickles it
    odd = st.one_of(JSON_VALUES, pickled_tensor())

    def maybe(value: Any) -> Any:
        return draw(odd) if draw(st.integers(0, 7)) == 7 else value

    model = {
        "module": maybe({n: zero_tensor(f"m{n}", math.prod(s), "BFloat16Storage", s) for n, s in shapes.items()}),
        "param_shapes": maybe([maybe({n: maybe(size(s)) for n, s in shapes.items()})]),
        "buffer_names": maybe([]), "shared_params": maybe({}), "dp_world_size": maybe(ws), "ds_version": "0.19.8",
        "frozen_param_shapes": maybe(None), "frozen_param_fragments": maybe({}),
    }
    # fp32 elements each rank saves: the groups' 8 split evenly, or each parameter split on its own (stage 3)
    per_rank = 8 // ws if layout == "stage2" else sum(-(-math.prod(s) // ws) for s in shapes.values())
    stage = Call(Global("deepspeed.runtime.zero.config", "ZeroStageEnum"), maybe(2 if layout == "stage2" else 3))
    key = "single_partition_of_fp32_groups" if layout == "stage2" else "fp32_flat_groups"
    optim = [{"optimizer_state_dict": maybe({
        "zero_stage": maybe(stage), "partition_count": maybe([ws] if layout == "stage2" else ws),
        key: maybe([maybe(zero_tensor(f"o{r}", draw(st.sampled_from([per_rank, per_rank + 1, 0, 2**40]))))]),
        "param_alignment_paddings": maybe([[0, 0]]), "loss_scaler": Call(Global("deepspeed.runtime.fp16.loss_scaler", "LossScaler"), 1.0),
    })} for r in range(ws)]
    return layout, ws, model, optim


@fuzz(250)
@given(checkpoint=zero_checkpoint())
def test_zero_metadata(scratch: Callable[[], Path], checkpoint: tuple[str, int, dict[str, Any], list[dict[str, Any]]]) -> None:
    layout, ws, model, optim = checkpoint
    folder = scratch() / "global_step1"
    folder.mkdir()
    data = {k: bytes(64) for k in ("mw", "mb", "o0", "o1")}
    if layout == "stage2":
        torch_zip(folder / "mp_rank_00_model_states.pt", pickle_bytes(model), data)
    else:
        for r in range(ws):
            torch_zip(folder / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt", pickle_bytes(model), data)
    for r, states in enumerate(optim):
        torch_zip(folder / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt", pickle_bytes(states), data)
    for weights in ("master", "module"):
        ck: Checkpoint | None = outcome(lambda: open_checkpoint(folder, ConvertOptions.of(zero_weights=weights)))
        if ck is not None:
            inside_files(ck.tensors)


# --- PyTorch Distributed Checkpoint metadata -------------------------------------------------------

DCP_META = "torch.distributed.checkpoint.metadata"
# (offsets, sizes) of the chunks of 'model.w' (4 x 3, split in rows across two rank files) and of 'model.b' (3)
DCP_CHUNKS = {"model.w": [((0, 0), (2, 3)), ((2, 0), (2, 3))], "model.b": [((0,), (3,))]}


@st.composite
def dcp_checkpoint(draw: st.DrawFn) -> tuple[Any, dict[str, bytes]]:
    """(metadata, rank files) of a small checkpoint whose fields are, each with some chance, replaced by
    anything; every chunk a real torch.save archive at its place in a rank file."""
    odd = st.one_of(JSON_VALUES, pickled_tensor())

    def maybe(value: Any) -> Any:
        return draw(odd) if draw(st.integers(0, 7)) == 7 else value

    def size(dims: tuple[int, ...]) -> Any:
        lie = st.lists(st.one_of(st.integers(0, 5), EDGE_INTS), max_size=3).map(tuple)
        return Call(Global("torch", "Size"), draw(lie) if draw(st.integers(0, 9)) == 9 else dims)

    def obj(kind: str, state: Any, module: str = DCP_META) -> Any:
        return maybe(Built(Global(module, kind), state))

    files: dict[str, bytearray] = {"__0_0.distcp": bytearray(), "__1_0.distcp": bytearray()}
    entries, stored = {}, {}
    for fqn, chunks in DCP_CHUNKS.items():
        shape = (4, 3) if fqn == "model.w" else (3,)
        props = obj("TensorProperties", (Global("torch", draw(st.sampled_from(["float32", "float32", "bfloat16", "complex64"]))),
                                         Call(Global("torch.serialization", "_get_layout"), maybe("torch.strided")), False,
                                         Call(Global(DCP_META, "_MEM_FORMAT_ENCODING"), 0), False))
        entries[fqn] = obj("TensorStorageMetadata", {"properties": props, "size": size(shape), "chunks": maybe([
            obj("ChunkStorageMetadata", {"offsets": size(o), "sizes": size(n)}) for o, n in chunks])})
        for r, (offsets, sizes) in enumerate(chunks):
            name = f"__{r}_0.distcp"
            blob = io.BytesIO()
            numel = math.prod(sizes)
            tensor = rebuilt_tensor(StorageRef("0", draw(often(st.just(numel), LYING_COUNTS))), 0, sizes,
                                    tuple(math.prod(sizes[d + 1:]) for d in range(len(sizes))))
            torch_zip(blob, pickle_bytes(maybe(tensor)), {"0": bytes(range(4 * numel))})
            at, length = len(files[name]), len(blob.getvalue())
            files[name] += blob.getvalue() + bytes(draw(st.integers(0, 8)))
            # a key stays a pickled object (any JSON value may not be hashable); its state may be anything
            key = Built(Global(DCP_META, "MetadataIndex"), maybe({"fqn": maybe(fqn), "offset": size(offsets), "index": 0}))
            stored[key] = obj("_StorageInfo", {"relative_path": maybe(name), "offset": maybe(at), "length": maybe(length)},
                              "torch.distributed.checkpoint.filesystem")
    planner = maybe({fqn: maybe(tuple(fqn.split(".", 1))) for fqn in DCP_CHUNKS})
    meta = Built(Global(DCP_META, "Metadata"), maybe({"state_dict_metadata": maybe(entries), "planner_data": planner,
                                                      "storage_data": maybe(stored), "version": "1.0.0"}))
    return meta, {n: bytes(b) for n, b in files.items()}


@fuzz(200)
@given(checkpoint=dcp_checkpoint(), key=st.sampled_from([None, None, "model", "app.model", "model.w", ""]))
def test_dcp_metadata(scratch: Callable[[], Path], checkpoint: tuple[Any, dict[str, bytes]], key: str | None) -> None:
    meta, files = checkpoint
    folder = scratch()
    (folder / ".metadata").write_bytes(pickle_bytes(meta))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    ck = outcome(lambda: open_checkpoint(folder, ConvertOptions.of(dcp_key=key)))
    if ck is not None:
        inside_files(ck.tensors)


# --- config.json, tokenizer files, NeoBERT config.yaml -------------------------------------------

CONFIG_FIELDS = sorted({*LLAMA_CONFIG, "head_dim", "rope_theta", "rope_scaling", "rope_parameters", "text_config", "hidden_act",
                        "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "quantization_config", "sliding_window",
                        "n_layer", "n_head", "layer_norm_eps", "num_local_experts", "num_experts_per_tok"})


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-llama")
    return tiny_llama(Workshop(root / "w", root / "shared"))


def plans(folder: Path, out: Path) -> None:
    """Plan the folder as a GGUF file and as an HF folder: everything a config or tokenizer file feeds."""
    for to, name in (("gguf", "o.gguf"), ("hf", "ohf")):
        outcome(lambda: pyconv.convert(folder, out / name, to=to, dry_run=True, progress=False))


@fuzz(250)
@given(changes=st.dictionaries(st.sampled_from(CONFIG_FIELDS), JSON_VALUES, min_size=1, max_size=4))
def test_config_json(llama_folder: Path, scratch: Callable[[], Path], changes: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "pyconv")
    (llama_folder / "config.json").write_text(json.dumps({**LLAMA_CONFIG, **changes}))
    plans(llama_folder, scratch())


TOKEN_VALUES = st.one_of(st.sampled_from(["<s>", "</s>", "<unk>", "▁the", "not-in-vocab"]), JSON_VALUES,
                         st.fixed_dictionaries({"content": st.one_of(st.sampled_from(["<s>", "x"]), JSON_VALUES)}))


@fuzz(250)
@given(tcfg=st.dictionaries(st.sampled_from(["bos_token", "eos_token", "pad_token", "unk_token", "model_max_length",
                                             "added_tokens_decoder", "chat_template", "add_bos_token", "tokenizer_class"]),
                            st.one_of(TOKEN_VALUES, st.dictionaries(st.sampled_from(["0", "1", "399", "400", "x", "-1"]),
                                                                    st.one_of(JSON_VALUES, st.fixed_dictionaries(
                                                                        {"content": TOKEN_VALUES, "special": JSON_VALUES})),
                                                                    max_size=3)), max_size=5),
       smap=st.none() | st.dictionaries(st.sampled_from(["bos_token", "eos_token", "pad_token"]), TOKEN_VALUES, max_size=3),
       tokenizer_json=st.none() | st.fixed_dictionaries({"model": st.one_of(JSON_VALUES, st.fixed_dictionaries({"vocab": JSON_VALUES})),
                                                         "added_tokens": JSON_VALUES}))
def test_tokenizer_files(llama_folder: Path, scratch: Callable[[], Path], tcfg: dict[str, Any], smap: dict[str, Any] | None,
                         tokenizer_json: dict[str, Any] | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "pyconv")
    (llama_folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    files = {"tokenizer_config.json": tcfg, "special_tokens_map.json": smap, "tokenizer.json": tokenizer_json}
    for name, doc in files.items():
        (llama_folder / name).unlink(missing_ok=True)
        if doc is not None:
            (llama_folder / name).write_text(json.dumps(doc))
    try:
        plans(llama_folder, scratch())
    finally:
        for name in files:
            (llama_folder / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def neobert_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .neobert_fixtures import Run, shape, write_step

    return write_step(tmp_path_factory.mktemp("fuzz-neobert"), Run("fuzz", shape(), seed=1))


@fuzz(150)
@given(model=st.dictionaries(st.sampled_from(["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "max_position_embeddings", "norm_eps", "pad_token_id",
                                              "rope", "rms_norm", "hidden_act", "ngpt", "tie_word_embeddings", "attn_backend",
                                              "dropout_prob"]), JSON_VALUES, min_size=1, max_size=4),
       sections=st.dictionaries(st.sampled_from(["trainer", "optimizer", "dataset", "tokenizer"]), JSON_VALUES, max_size=2))
def test_neobert_config_yaml(neobert_step: Path, scratch: Callable[[], Path], model: dict[str, Any], sections: dict[str, Any],
                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "pyconv")
    config = neobert_step / "config.yaml"
    original = config.read_text()
    doc = yaml.safe_load(original)
    doc["model"].update(model)
    doc.update(sections)
    config.write_text(yaml.safe_dump(doc))
    try:
        outcome(lambda: open_checkpoint(neobert_step))
        outcome(lambda: pyconv.convert(neobert_step, scratch() / "out", to="hf", dry_run=True, progress=False))
    finally:
        config.write_text(original)
