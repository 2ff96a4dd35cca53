"""Malicious and malformed checkpoints, generated when the tests run (nothing binary is committed).

Each ``Case`` builds one input in a folder and names the one-line error every way of reading it must end
in: the reader in-process, ``pyconv inspect`` and ``pyconv convert`` in a subprocess. Pickle payloads
would create ``MARKER`` beside the input if anything ever ran them. Cases whose trouble is in a file
only a target reads (config.json fields, tokenizer files) open cleanly and fail when ``to`` plans.

The builders write the bytes by hand where a library would refuse to produce them (lying lengths,
overlapping spans, hand-written pickle opcodes) and use the format's own library otherwise.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import resource
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

MARKER = "pwned"
Target = TypeVar("Target", Path, io.BytesIO)


@contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """This process may map at most ``extra`` more bytes until the block ends: an allocation sized by a
    lying header raises MemoryError instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status", encoding="ascii") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Workshop], Path]  # writes the input into the workshop's folder; returns the path to open
    message: str | None                # part of the one error line; None: harmless, reads and converts
    to: str = "safetensors"            # the target the convert run plans
    opens: bool = False                # True: reading succeeds, only planning ``to`` fails


class Workshop:
    """The folder a case is built in, and the parts several cases share (made once per session)."""

    def __init__(self, folder: Path, shared: Path) -> None:
        self.folder = folder
        self.shared = shared
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    def path(self, name: str) -> Path:
        return self.folder / name

    def tokenizer_model(self) -> Path:
        return _sentencepiece(self.shared)


@functools.cache
def _sentencepiece(shared: Path) -> Path:
    from .archs_fixtures import train_sentencepiece

    folder = shared / "sentencepiece"
    if not (folder / "tokenizer.model").exists():
        folder.mkdir(parents=True, exist_ok=True)
        train_sentencepiece(folder, gemma=False)
    return folder / "tokenizer.model"


# --- safetensors -----------------------------------------------------------------------------------

def safetensors_bytes(header: bytes | dict[str, Any], data: bytes = b"", *, length: int | None = None) -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(blob) if length is None else length) + blob + data


def st_entry(dtype: str, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _raw(name: str, blob: bytes) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        path = w.path(name)
        path.write_bytes(blob)
        return path
    return build


def _st(name: str, header: bytes | dict[str, Any], data: bytes = b"", *, length: int | None = None) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        path = w.path(name)
        path.write_bytes(safetensors_bytes(header, data, length=length))
        return path
    return build


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _duplicate_names() -> bytes:
    # json.dumps cannot write a key twice; the text says "w" twice, at different bytes
    entry = json.dumps(st_entry("F32", [1], 0, 4)), json.dumps(st_entry("F32", [1], 4, 8))
    return f'{{"w": {entry[0]}, "w": {entry[1]}}}'.encode()


def _good_safetensors(path: Path) -> Path:
    path.write_bytes(safetensors_bytes({"w": st_entry("F32", [2], 0, 8)}, bytes(8)))
    return path


# --- index.json ------------------------------------------------------------------------------------

def _index(target: str | Callable[[Workshop], str], *, torch_index: bool = False) -> Callable[[Workshop], Path]:
    """A sharded folder whose index points ``w`` at ``target``; the real shard lies outside the folder."""
    def build(w: Workshop) -> Path:
        outside = _good_safetensors(w.path("outside.safetensors"))
        folder = w.path("model")
        folder.mkdir()
        name = target(w) if callable(target) else target
        index = "pytorch_model.bin.index.json" if torch_index else "model.safetensors.index.json"
        (folder / index).write_text(json.dumps({"weight_map": {"w": name.replace("OUTSIDE", str(outside))}}))
        return folder
    return build


def _symlinked_file(w: Workshop) -> str:
    (w.path("model") / "shard.safetensors").symlink_to(w.path("outside.safetensors"))
    return "shard.safetensors"


def _symlinked_folder(w: Workshop) -> str:
    (w.path("model") / "sub").symlink_to(w.folder)
    return "sub/outside.safetensors"


def _index_text(text: bytes) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        folder = w.path("model")
        folder.mkdir()
        _good_safetensors(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_bytes(text)
        return folder
    return build


# --- GGUF ------------------------------------------------------------------------------------------

def gguf_header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gguf_str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def gguf_kv(key: bytes, value_type: int, payload: bytes) -> bytes:
    return gguf_str(key) + struct.pack("<I", value_type) + payload


def gguf_tensor_info(name: bytes, ne: list[int], ggml_type: int, offset: int) -> bytes:
    return gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", ggml_type, offset)


def gguf_file(tensors: list[bytes], kvs: list[bytes] = (), data: bytes = b"", n_tensors: int | None = None) -> bytes:  # type: ignore[assignment]
    head = gguf_header(len(tensors) if n_tensors is None else n_tensors, len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % 32) + data


F32 = 0


# --- torch zip and pickles -------------------------------------------------------------------------

class StorageRef:
    """Pickled as torch.save pickles a storage: a persistent id naming a zip member."""

    def __init__(self, key: str, numel: int, kind: str = "FloatStorage") -> None:
        self.key, self.numel, self.kind = key, numel, kind


class Global:
    """A global pickled by name (``module.name``), whatever the name refers to."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class Call:
    """``func(*args)`` as a pickle REDUCE, ``func`` being a ``Global``."""

    def __init__(self, func: Global, *args: Any) -> None:
        self.func, self.args = func, args


class Built:
    """An object of class ``cls`` (a ``Global``) as pickles of dataclasses make one: NEWOBJ, then BUILD with ``state``."""

    def __init__(self, cls: Global, state: Any) -> None:
        self.cls, self.state = cls, state


def rebuilt_tensor(storage: StorageRef, offset: Any, size: Any, stride: Any) -> Call:
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride, False, collections.OrderedDict())


class _Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Writes ``Global``s and ``Call``s by name, so a pickle can name functions this process never imports."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, StorageRef):
            return ("storage", Global("torch", obj.kind), obj.key, "cpu", obj.numel)
        return None

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        if isinstance(obj, Call):
            self.save(obj.func)
            self.save(obj.args)
            self.write(pickle.REDUCE)
            return
        if isinstance(obj, Built):
            self.save(obj.cls)
            self.save(())
            self.write(pickle.NEWOBJ)
            self.save(obj.state)
            self.write(pickle.BUILD)
            return
        super().save(obj, save_persistent_id)


def pickle_bytes(root: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(root)
    return buf.getvalue()


def torch_zip(path: Target, data_pkl: bytes, storages: dict[str, bytes] | None = None, *,
              declared_pickle_size: int | None = None, pickle_zip_version: int | None = None) -> Target:
    """A file (or, to be placed inside another, a buffer) laid out as torch.save lays one out, around any pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    if declared_pickle_size is not None:
        _patch_directory(path, "archive/data.pkl", 24, "<I", declared_pickle_size)
    if pickle_zip_version is not None:
        _patch_directory(path, "archive/data.pkl", 6, "<H", pickle_zip_version)
    return path


def _patch_directory(path: Path, member: str, at_field: int, fmt: str, value: int) -> None:
    """Rewrite a field of ``member``'s central-directory entry (a lying zip header): its uncompressed size
    at byte 24, the zip version it needs at byte 6."""
    blob = bytearray(path.read_bytes())
    name = member.encode()
    at = blob.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", blob, at + 28)[0]
        if bytes(blob[at + 46:at + 46 + name_len]) == name:
            struct.pack_into(fmt, blob, at + at_field, value)
            break
        at = blob.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(blob))


def _torch(name: str, root: Callable[[Workshop], Any], storages: dict[str, bytes] | None = None) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        return torch_zip(w.path(name), pickle_bytes(root(w)), storages)
    return build


def _touch(w: Workshop) -> str:
    return f"touch {w.marker}"


def _state_dict_with(value: Any) -> dict[str, Any]:
    return {"model": {"w": rebuilt_tensor(StorageRef("0", 2), 0, (2,), (1,))}, "extra": value}


def _torch_raw(name: str, data_pkl: Callable[[Workshop], bytes]) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        return torch_zip(w.path(name), data_pkl(w), {"0": bytes(8)})
    return build


def _nested_value(opcodes: bytes) -> bytes:
    """{"model": {"w": <tensor>}, "extra": <what ``opcodes`` build>}. Opcodes nest values as deep as they
    like (TUPLE1 after TUPLE1, or MARKs closed by LIST) where a pickler would recurse."""
    head = pickle_bytes(_state_dict_with(None))
    assert head.endswith(b"Nu."), head[-8:]  # the last value, then SETITEMS and STOP
    return head[:-3] + opcodes + b"u."


def _nested_key(depth: int) -> bytes:
    # {((((None,),),),): 1}: EMPTY_DICT, the key, BININT1 1, SETITEM, STOP
    return b"\x80\x02}N" + b"\x85" * depth + b"K\x01s."


def _zip_bomb(w: Workshop) -> Path:
    """data.pkl deflated from 900 MB of zeros (under 1 MB on disk)."""
    path = w.path("bomb.pt")
    size = 900 << 20
    packer = __import__("zlib").compressobj(9, 8, -15)
    chunk = bytes(1 << 20)
    deflated = b"".join(packer.compress(chunk) for _ in range(size >> 20)) + packer.flush()
    crc = 0
    for _ in range(size >> 20):
        crc = __import__("zlib").crc32(chunk, crc)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/byteorder", "little")
    # a hand-written member: zipfile would need the 900 MB in memory to write it
    with path.open("r+b") as f:
        directory_at = _central_directory_offset(f.read())
        f.seek(directory_at)
        tail = f.read()
        f.seek(directory_at)
        f.truncate()
        local_at = f.tell()
        name = b"archive/data.pkl"
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), size, len(name), 0) + name)
        f.write(deflated)
        new_directory = f.tell()
        entry = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(deflated), size,
                            len(name), 0, 0, 0, 0, 0, local_at) + name
        old_entries, end = tail[:tail.find(b"PK\x05\x06")], tail[tail.find(b"PK\x05\x06"):]
        f.write(old_entries + entry)
        count = struct.unpack_from("<H", end, 10)[0] + 1
        f.write(end[:8] + struct.pack("<HHII", count, count, len(old_entries) + len(entry), new_directory) + end[20:])
    return path


def _multi_disk(path: Path) -> Path:
    """A torch file with a zip64 locator (torch.save writes one) saying the archive spans two disks."""
    torch_zip(path, pickle_bytes({"w": rebuilt_tensor(StorageRef("0", 2), 0, (2,), (1,))}), {"0": bytes(8)})
    blob = path.read_bytes()
    end = blob.rfind(b"PK\x05\x06")
    path.write_bytes(blob[:end] + b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 2) + blob[end:])
    return path


def _central_directory_offset(blob: bytes) -> int:
    end = blob.rfind(b"PK\x05\x06")
    return int(struct.unpack_from("<I", blob, end + 16)[0])


def _compressed_storage(w: Workshop) -> Path:
    path = w.path("deflated.pt")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl"), pickle_bytes({"w": rebuilt_tensor(StorageRef("0", 1 << 20), 0, (1 << 20,), (1,))}))
        z.writestr("archive/data/0", bytes(4 << 20))
    return path


def _torch_save_payload(w: Workshop) -> Path:
    import torch

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return os.system, (_touch(w),)

    path = w.path("evil.pt")
    torch.save({"w": torch.ones(2), "x": Payload()}, path)
    return path


# --- DeepSpeed ZeRO --------------------------------------------------------------------------------

def write_zero(folder: Path, params: dict[str, Any], *, tag: str = "global_step1", model: dict[str, Any] | None = None,
               optim: dict[str, Any] | None = None, flat: Any = None, optim_pickle: bytes | None = None) -> Path:
    """A stage-2, one-rank checkpoint of ``params`` (name -> fp32 torch tensor) as DeepSpeed lays one out:
    ``folder/latest`` naming ``folder/<tag>/`` with the model and optimizer states, fields of either
    replaced by ``model`` and ``optim``, the flat fp32 partition by ``flat``, the optimizer file by raw bytes."""
    import torch

    (folder / tag).mkdir(parents=True)
    states = {"module": collections.OrderedDict((n, t.to(torch.bfloat16)) for n, t in params.items()),
              "param_shapes": [collections.OrderedDict((n, t.shape) for n, t in params.items())],
              "buffer_names": [], "shared_params": {}, "dp_world_size": 1, "ds_version": "0.19.8", **(model or {})}
    partition = torch.cat([t.flatten() for t in params.values()]) if flat is None else flat
    osd = {"zero_stage": 2, "partition_count": [1], "single_partition_of_fp32_groups": [partition], **(optim or {})}
    torch.save(states, folder / tag / "mp_rank_00_model_states.pt")
    optim_file = folder / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    if optim_pickle is None:
        torch.save({"optimizer_state_dict": osd}, optim_file)
    else:
        torch_zip(optim_file, optim_pickle)
    (folder / "latest").write_text(tag)
    return folder


def _zero(model: dict[str, Any] | None = None, optim: dict[str, Any] | None = None, *,
          shapes: dict[str, tuple[int, ...]] | None = None, flat: Callable[[Any], Any] | None = None,
          payload: bool = False) -> Callable[[Workshop], Path]:
    """A small stage-2 checkpoint with fields replaced; ``shapes`` renames the parameters (as stride-0 views:
    their values are not read)."""
    def build(w: Workshop) -> Path:
        import torch

        params = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(2)}
        partition = flat(torch) if flat else None
        if shapes:  # bf16 already, so that no copy is made of views standing for 2^60 elements
            params = {n: torch.zeros(1, dtype=torch.bfloat16).as_strided(s, (0,) * len(s)) for n, s in shapes.items()}
            partition = partition if partition is not None else torch.arange(8, dtype=torch.float32)
        payload_pickle = pickle_bytes({"optimizer_state_dict": Call(Global("os", "system"), _touch(w))}) if payload else None
        return write_zero(w.folder, params, model=model, optim=optim, flat=partition, optim_pickle=payload_pickle)
    return build


def _zero_latest(tag: str) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        _zero()(w)
        (w.folder / "latest").write_text(tag)
        return w.folder
    return build


# --- PyTorch Distributed Checkpoint ---------------------------------------------------------------

def write_dcp(folder: Path, tensors: Callable[[Any], dict[str, Any]] | None = None,
              edit: Callable[[Any, Any], None] | None = None) -> Path:
    """A checkpoint ``{"model": tensors}`` saved by torch.distributed.checkpoint in one process, then its
    metadata changed by ``edit(metadata, torch)`` (the file is ours: torch reads and writes it here)."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    sd = tensors(torch) if tensors else {"w": torch.arange(12, dtype=torch.float32).view(3, 4), "b": torch.ones(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process": it is
        dcp.save({"model": sd, "step": 3}, checkpoint_id=folder, no_dist=True)
    if edit is not None:
        md = folder / ".metadata"
        meta = pickle.loads(md.read_bytes())
        edit(meta, torch)
        md.write_bytes(pickle.dumps(meta))
    return folder


def _dcp(tensors: Callable[[Any], dict[str, Any]] | None = None, edit: Callable[[Any, Any], None] | None = None,
         files: Callable[[Path], None] | None = None) -> Callable[[Workshop], Path]:
    """A DCP case: a small real checkpoint with its metadata edited, then its rank files by ``files(folder)``."""
    def build(w: Workshop) -> Path:
        folder = write_dcp(w.path("ckpt"), tensors, edit)
        if files is not None:
            files(folder)
        return folder
    return build


def _stored(meta: Any, fqn: str) -> Any:
    return next(v for k, v in meta.storage_data.items() if k.fqn == fqn)


def _dcp_chunks(fqn: str, *boxes: tuple[tuple[int, ...], tuple[int, ...]]) -> Callable[[Any, Any], None]:
    def edit(meta: Any, torch: Any) -> None:
        from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

        meta.state_dict_metadata[fqn].chunks = [ChunkStorageMetadata(torch.Size(o), torch.Size(n)) for o, n in boxes]
    return edit


def _dcp_set(fqn: str, **fields: Any) -> Callable[[Any, Any], None]:
    def edit(meta: Any, _torch: Any) -> None:
        for k, v in fields.items():
            setattr(_stored(meta, fqn), k, v)
    return edit


def _truncate(folder: Path) -> None:
    rank_file = folder / "__0_0.distcp"
    rank_file.write_bytes(rank_file.read_bytes()[:-700])


def _dcp_payload(w: Workshop) -> Path:
    folder = write_dcp(w.path("ckpt"))
    (folder / ".metadata").write_bytes(pickle_bytes(Built(Global("torch.distributed.checkpoint.metadata", "Metadata"), {
        "state_dict_metadata": {}, "storage_data": Call(Global("os", "system"), _touch(w))})))
    return folder


# --- config.json, tokenizer files, config.yaml -----------------------------------------------------

LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 400,
                "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def llama_tensors(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a LLaMA with ``config``'s sizes (heads as wide as K and V)."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        shapes.update({f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
                       **{f"{p}.self_attn.{x}_proj.weight": (h, h) for x in "qkvo"},
                       f"{p}.mlp.gate_proj.weight": (i, h), f"{p}.mlp.up_proj.weight": (i, h), f"{p}.mlp.down_proj.weight": (h, i)})
    return shapes


def llama_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random f32 weights for ``config``: normal matrices, norms near one (as a trained model has them)."""
    rng = np.random.default_rng(seed)
    return {n: (1 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.05 * rng.standard_normal(s)).astype(np.float32)
            for n, s in llama_tensors(config).items()}


def tiny_llama(w: Workshop, config: dict[str, Any] | bytes | None = None, *, size: dict[str, int] | None = None,
               name: str = "llama") -> Path:
    """A LLaMA of LLAMA_CONFIG's sizes, or ``size``'s (random f32 weights, SentencePiece tokenizer), that converts
    to GGUF and HF as it is; ``config`` changes or replaces its config.json, not its tensors."""
    from safetensors.numpy import save_file

    folder = w.path(name)
    folder.mkdir()
    sizes = {**LLAMA_CONFIG, **(size or {})}
    save_file(llama_weights(sizes), str(folder / "model.safetensors"))
    text = config if isinstance(config, bytes) else json.dumps({**sizes, **(config or {})}).encode()
    (folder / "config.json").write_bytes(text)
    shutil.copy(w.tokenizer_model(), folder / "tokenizer.model")
    return folder


def _llama(config: dict[str, Any] | bytes) -> Callable[[Workshop], Path]:
    return lambda w: tiny_llama(w, config)


def _llama_with(files: dict[str, bytes]) -> Callable[[Workshop], Path]:
    def build(w: Workshop) -> Path:
        folder = tiny_llama(w)
        for name, text in files.items():
            (folder / name).write_bytes(text)
        return folder
    return build


def _neobert(edit: Callable[[dict[str, Any]], None] | str) -> Callable[[Workshop], Path]:
    """A NeoBERT trainer step folder (tests/neobert_fixtures.py) with its config.yaml edited or replaced."""
    def build(w: Workshop) -> Path:
        import yaml

        from .neobert_fixtures import Run, shape, write_step

        step = write_step(w.folder, Run("fuzz", shape(), seed=1))
        if isinstance(edit, str):
            (step / "config.yaml").write_text(edit)
        else:
            doc = yaml.safe_load((step / "config.yaml").read_text())
            edit(doc)
            (step / "config.yaml").write_text(yaml.safe_dump(doc))
        return step
    return build


def _set_model(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["model"].update(fields)


def _laughs(levels: int) -> str:
    """YAML whose aliases nest ``levels`` lists of nine: small text, 9**levels strings once expanded."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _neobert_bomb(w: Workshop) -> Path:
    import yaml

    step = _neobert(lambda doc: None)(w)
    doc = yaml.safe_load((step / "config.yaml").read_text())
    text = yaml.safe_dump({k: v for k, v in doc.items() if k != "dataset"})
    (step / "config.yaml").write_text(_laughs(9) + text + "dataset:\n  name: *a9\n")
    return step


# --- zstd-compressed inputs ------------------------------------------------------------------------

def zst_bytes(data: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))


def _zst(name: str, blob: Callable[[], bytes]) -> Callable[[Workshop], Path]:
    return _raw(name, blob())


def _lying_frame() -> bytes:
    # a frame that declares 2^50 bytes of content (8-byte size field, 1 KiB window) around one raw 4-byte block
    return struct.pack("<IBBQ", 0xFD2FB528, 0b11000000, 0, 1 << 50) + (1 | 4 << 3).to_bytes(3, "little") + b"abcd"


def _good_safetensors_bytes() -> bytes:
    return safetensors_bytes({"w": st_entry("F32", [256], 0, 1024)}, bytes(range(256)) * 4)


CASES: list[Case] = [
    # safetensors headers
    Case("st-empty", _raw("e.safetensors", b""), "shorter than the 8-byte header length"),
    Case("st-header-past-end", _st("m.safetensors", {"w": st_entry("F32", [2], 0, 8)}, bytes(8), length=4096),
         "runs past the end of the file"),
    Case("st-header-2^63", _st("m.safetensors", b"{}", length=2**63), "over the 100000000-byte limit"),
    Case("st-overlap", _st("m.safetensors", {"a": st_entry("F32", [2], 0, 8), "b": st_entry("F32", [2], 4, 12)}, bytes(12)),
         "overlap"),
    Case("st-nan-shape", _st("m.safetensors", b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', bytes(4)),
         "is not a list of non-negative integers"),
    Case("st-shape-overflow", _st("m.safetensors", {"w": st_entry("F32", [2**62, 2**62], 0, 16)}, bytes(16)),
         "data_offsets span 16"),
    Case("st-negative-offset", _st("m.safetensors", {"w": st_entry("F32", [1], -4, 0)}, bytes(4)), "fall outside"),
    Case("st-bad-utf8", _st("m.safetensors", b'{"\xff": 1}'), "not valid JSON"),
    Case("st-duplicate-name", _st("m.safetensors", _duplicate_names(), bytes(8)), "'w' appears twice in the header"),
    Case("st-deep-json", _st("m.safetensors", _deep_json(100_000)), "nested too deeply"),
    Case("st-huge-name", _st("m.safetensors", {"n" * (1 << 20): st_entry("F99", [1], 0, 4)}, bytes(4)),
         "unknown dtype 'F99'"),
    # index.json
    Case("index-relative-escape", _index("../outside.safetensors"), "points outside the folder"),
    Case("index-absolute", _index("OUTSIDE"), "which is not a relative file name"),
    Case("index-symlink-file", _index(_symlinked_file), "points outside the folder"),
    Case("index-symlink-folder", _index(_symlinked_folder), "points outside the folder"),
    Case("index-nul-byte", _index("shard\x00.safetensors"), "which is not a relative file name"),
    Case("index-torch-escape", _index("../outside.bin", torch_index=True), "points outside the folder"),
    Case("index-not-a-map", _index_text(b'{"weight_map": ["w"]}'), "index has no weight_map"),
    Case("index-deep-json", _index_text(b'{"weight_map": ' + _deep_json(100_000) + b"}"), "nested too deeply"),
    # GGUF
    Case("gguf-tensor-count-2^63", _raw("m.gguf", gguf_header(2**63, 0) + bytes(64)),
         "tensor count 9223372036854775808 cannot fit"),
    Case("gguf-kv-count-2^64-1", _raw("m.gguf", gguf_header(0, 2**64 - 1) + bytes(64)), "key-value count"),
    Case("gguf-string-2^62", _raw("m.gguf", gguf_header(0, 1) + struct.pack("<Q", 2**62) + bytes(32)), "string length"),
    Case("gguf-array-2^60", _raw("m.gguf", gguf_header(0, 1) + gguf_kv(b"k", 9, struct.pack("<IQ", 4, 2**60)) + bytes(16)),
         "array count"),
    Case("gguf-array-of-arrays", _raw("m.gguf", gguf_header(0, 1) + gguf_kv(b"k", 9, struct.pack("<IQ", 9, 1)) + bytes(16)),
         "array element type 9 is not a GGUF scalar type"),
    Case("gguf-alignment-zero", _raw("m.gguf", gguf_file([], [gguf_kv(b"general.alignment", 4, struct.pack("<I", 0))])),
         "general.alignment 0 is not a power of two"),
    Case("gguf-overlap", _raw("m.gguf", gguf_file([gguf_tensor_info(b"a", [8], F32, 0), gguf_tensor_info(b"b", [8], F32, 0)],
                                                   data=bytes(32))), "data of 'a' and 'b' overlap"),
    Case("gguf-duplicate-tensor", _raw("m.gguf", gguf_file([gguf_tensor_info(b"a", [8], F32, 0), gguf_tensor_info(b"a", [8], F32, 32)],
                                                            data=bytes(64))), "tensor name appears twice"),
    Case("gguf-shape-overflow", _raw("m.gguf", gguf_file([gguf_tensor_info(b"a", [2**63, 2**63], F32, 0)], data=bytes(32))),
         "cannot fit in a"),
    Case("gguf-truncated", _raw("m.gguf", gguf_header(0, 1) + gguf_kv(b"key", 4, b"\x01")), "needs 4 more bytes but the file ends"),
    Case("gguf-alignment-string", _raw("m.gguf", gguf_file([], [gguf_kv(b"general.alignment", 8, gguf_str(b"abc"))])),
         "general.alignment 'abc' is not"),
    Case("gguf-split-of-zero", _raw("m-00001-of-00000.gguf", gguf_file([])), "split set of 0 files"),
    # torch zip and pickles
    Case("torch-os-system", _torch_save_payload, "refused: it names the global 'posix.system'"),
    Case("torch-nested-pickle", _torch("nested.pt", lambda w: _state_dict_with(
        Call(Global("pickle", "loads"), pickle_bytes(Call(Global("os", "system"), _touch(w))))), {"0": bytes(8)}),
         "names the global 'pickle.loads'"),
    Case("torch-builtins-getattr", _torch("getattr.pt", lambda w: _state_dict_with(
        Call(Global("builtins", "getattr"), Global("os", "system"), "__call__"))), "names the global 'builtins.getattr'"),
    Case("torch-rebuild-calls-exec", _torch("exec.pt", lambda w: {"w": Call(
        Global("torch._tensor", "_rebuild_from_type_v2"), Global("builtins", "exec"), Global("torch", "Tensor"),
        (f"open({str(w.marker)!r}, 'w').close()",), {})}), "names the global 'builtins.exec'"),
    Case("torch-ext-opcode", _torch_raw("ext.pt", lambda w: b"\x80\x02\x82\x01" + b"X" + len(_touch(w)).to_bytes(4, "little")
                                        + _touch(w).encode() + b"\x85R."), "copyreg extension code"),
    Case("torch-declared-size-lie", lambda w: torch_zip(w.path("lie.pt"), pickle_bytes({"w": rebuilt_tensor(StorageRef("0", 2), 0, (2,), (1,))}),
                                                        {"0": bytes(8)}, declared_pickle_size=5), "cannot read zip member 'archive/data.pkl'"),
    Case("torch-zip-version-6.4", lambda w: torch_zip(w.path("v64.pt"), pickle_bytes({"w": rebuilt_tensor(StorageRef("0", 2), 0, (2,), (1,))}),
                                                      {"0": bytes(8)}, pickle_zip_version=64), "broken zip directory (zip file version 6.4)"),
    Case("torch-zip-multi-disk", lambda w: _multi_disk(w.path("disks.pt")), "zipfiles that span multiple disks are not supported"),
    Case("torch-compressed-storage", _compressed_storage, "zip member 'archive/data/0' is compressed"),
    Case("torch-storage-size-lie", _torch("lie.pt", lambda w: {"w": rebuilt_tensor(StorageRef("0", 2**62), 0, (2,), (1,))}, {"0": bytes(8)}),
         "the pickle says 18446744073709551616"),
    Case("torch-stride-overflow", _torch("expand.pt", lambda w: {"w": rebuilt_tensor(StorageRef("0", 1), 0, (2**40, 2**40), (0, 0))},
                                         {"0": bytes(4)}), "more bytes than a file can hold"),
    # zstd-compressed inputs
    Case("zst-truncated", _zst("model.safetensors.zst", lambda: zst_bytes(_good_safetensors_bytes())[:-9]), "is truncated"),
    Case("zst-skippable-past-end", _zst("model.gguf.zst", lambda: struct.pack("<II", 0x184D2A5E, 1 << 20) + bytes(16)),
         "a skippable zstd frame ends past the"),
    Case("zst-garbage", _zst("model.gguf.zst", lambda: b"GGUF" * 64), "is not a zstd stream (no frame starts at byte 0)"),
    Case("zst-checksum", _zst("model.safetensors.zst", lambda: (lambda b: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:])(
        zst_bytes(_good_safetensors_bytes()))), "cannot decompress it"),
    Case("zst-lying-size", _zst("model.safetensors.zst", _lying_frame), "its frames hold 1125.90 TB, more than the"),
    Case("zst-unnamed-content", _zst("model.zst", lambda: zst_bytes(_good_safetensors_bytes())),
         "a compressed input is read by the name of what it holds"),
    # DeepSpeed ZeRO
    Case("torch-negative-stride", _torch("neg.pt", lambda w: {"w": rebuilt_tensor(StorageRef("0", 4), 0, (4,), (-1,))}, {"0": bytes(16)}),
         "is not a sequence of non-negative integers"),
    Case("torch-storage-key-traversal", _torch("keys.pt", lambda w: {"w": rebuilt_tensor(StorageRef("../../../etc/passwd", 1), 0, (1,), (1,))}),
         "has no zip member"),
    Case("torch-two-pickles", lambda w: _two_pickles(w.path("two.pt")), "this one has 2"),
    Case("torch-not-zip", _raw("junk.bin", bytes(range(256)) * 4), "not a torch checkpoint"),
    Case("torch-deep-tuples", _torch_raw("deep.pt", lambda w: _nested_value(b"N" + b"\x85" * 200_000)),
         "nests tuples more than 32 deep"),
    Case("torch-deep-key", _torch_raw("deep.pt", lambda w: _nested_key(200_000)), "nests tuples more than 32 deep"),
    Case("torch-deep-lists", _torch_raw("deep.pt", lambda w: _nested_value(b"(" * 200_000 + b"N" + b"l" * 200_000)), None),
    Case("torch-zip-bomb", _zip_bomb, "expands 917260 bytes to 943718400: a zip bomb"),
    Case("zero-payload", _zero(payload=True), "refused: it names the global 'os.system'"),
    Case("zero-shape-2^60", _zero(shapes={"w": (2**60,)}), "needs more than the 8 fp32"),
    Case("zero-latest-escape", _zero_latest("../../etc"), "not a checkpoint folder name"),
    Case("zero-stage-unhashable", _zero(optim={"zero_stage": {}}), "zero_stage {} is not a ZeRO stage"),
    Case("zero-partition-count-mixed", _zero(optim={"partition_count": ["a", 1]}), "partition_count"),
    Case("zero-strided-partition", _zero(shapes={"w": (3, 5)},
                                         flat=lambda torch: torch.arange(16, dtype=torch.float32)[::2]),
         "single_partition_of_fp32_groups[0] is not a contiguous"),
    # PyTorch Distributed Checkpoint
    Case("dcp-payload", _dcp_payload, "refused: it names the global 'os.system'"),
    Case("dcp-missing-distcp", _dcp(files=lambda f: (f / "__0_0.distcp").unlink()), "__0_0.distcp: tensor 'model.w': is missing"),
    Case("dcp-truncated", _dcp(files=_truncate), "truncated, or the chunk is outside the file"),
    Case("dcp-chunk-outside-file", _dcp(edit=_dcp_set("model.w", offset=1 << 40)), "truncated, or the chunk is outside the file"),
    Case("dcp-overlap", _dcp(edit=_dcp_chunks("model.w", ((0, 0), (3, 4)), ((2, 0), (1, 4)))),
         "its chunks at offsets (0, 0) and (2, 0) overlap"),
    Case("dcp-missing-chunk", _dcp(edit=_dcp_chunks("model.w", ((0, 0), (2, 4)))), "its chunks hold 8 of its 12 elements"),
    Case("dcp-chunk-outside-tensor", _dcp(edit=_dcp_chunks("model.w", ((2, 0), (2, 4)))), "is outside the tensor's size"),
    Case("dcp-unknown-dtype", _dcp(tensors=lambda torch: {"w": torch.ones(2, dtype=torch.complex64)}),
         "tensor 'model.w': torch.complex64 tensors have no pyconv type"),
    Case("dcp-transform", _dcp(edit=_dcp_set("model.w", transform_descriptors=["stream.zstd"])),
         "is stored through stream.zstd, which pyconv does not decode"),
    Case("dcp-not-a-torch-blob", _dcp(edit=_dcp_set("model.w", offset=1)), "is not a torch.save archive"),
    Case("dcp-no-model-key", _dcp(edit=lambda meta, _torch: meta.planner_data.update(
        {k: ("trainer", k) for k in meta.planner_data})), "no model state under 'model' or 'app.model' or at the top level"),
    # config.json, tokenizer files, NeoBERT config.yaml
    Case("neobert-recursive-alias", _neobert("model: &m\n  hidden_size: 64\n  self: *m\n"), "aliases expand to more than", "hf"),
    Case("neobert-yaml-bomb", _neobert_bomb, "config.yaml: its aliases expand to more than 100000 values", "hf"),
    Case("neobert-layers-2^40", _neobert(_set_model(num_hidden_layers=2**40)), "num_hidden_layers is 1099511627776", "hf"),
    Case("neobert-hidden-text", _neobert(_set_model(hidden_size="wide")), "hidden_size is 'wide', not a positive integer", "hf"),
    Case("neobert-layers-2^31", _neobert(_set_model(num_hidden_layers=2**31)), "num_hidden_layers is 2147483648, more than the", "hf"),
    Case("config-deep-json", _llama(b'{"architectures": ' + _deep_json(100_000) + b"}"), "cannot read config (nested too deeply)"),
    Case("config-architectures-int", _llama({"architectures": 5}), "architectures is 5, not a list of class names", "hf"),
    Case("config-model-type-list", _llama({"model_type": ["llama"]}), "model_type is ['llama'], not a name", "gguf"),
    Case("config-heads-zero", _llama({"num_attention_heads": 0}), "num_attention_heads is 0, not a positive integer", "gguf", True),
    Case("config-hidden-size-text", _llama({"hidden_size": "abc"}), "hidden_size is 'abc', not a positive integer", "gguf", True),
    Case("config-eps-text", _llama({"rms_norm_eps": "e"}), "rms_norm_eps is 'e', not a positive number", "gguf", True),
    Case("config-layers-2^40", _llama({"num_hidden_layers": 2**40}), "num_hidden_layers is 1099511627776", "gguf", True),
    Case("config-layers-2^31", _llama({"num_hidden_layers": 2**31}), "num_hidden_layers is 2147483648, more than the", "gguf", True),
    Case("config-context-2^70", _llama({"max_position_embeddings": 2**70}), "max_position_embeddings is 1180591620717411303424",
         "gguf", True),
    Case("config-quantization-int", _llama({"quantization_config": 1}), "quantization_config is 1, not a mapping", "gguf"),
    Case("config-text-config-null", _llama({"text_config": None}), "gguf-py cannot read the special tokens", "gguf", True),
    Case("config-rope-not-a-map", _llama({"rope_scaling": {"full_attention": 5}}), "rope_scaling is", "gguf", True),
    Case("tokenizer-config-garbage", _llama_with({"tokenizer_config.json": b"{not json"}), "tokenizer_config.json: is not valid JSON", "hf", True),
    Case("tokenizer-json-vocab-none", _llama_with({"tokenizer.json": b'{"model": {"vocab": [null]}}',
                                                                   "tokenizer_config.json": b'{"bos_token": "<s>"}'}),
         "tokenizer files here are not shaped as transformers writes them", "hf", True),
    Case("tokenizer-decoder-text", _llama_with({"tokenizer_config.json": b'{"added_tokens_decoder": "<s>"}'}),
         "tokenizer files here are not shaped as transformers writes them", "gguf", True),
    Case("tokenizer-json-list", _llama_with({"tokenizer.json": b"[1, 2]"}), "tokenizer.json: is not a JSON object", "hf", True),
]


def _two_pickles(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", pickle_bytes({}))
        z.writestr("b/data.pkl", pickle_bytes({}))
    return path
