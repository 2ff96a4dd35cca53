"""GGUF output for llama.cpp: tensors renamed and re-laid out per architecture table, metadata from
gguf-py's key tables, tokenizer, optional split into llama.cpp's gguf-split shards, and a sha256
fingerprint plus a meta.json beside the file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .. import dtypes
from ..archs.base import Arch, Config, detect_arch
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import Op, OutFile, OutTensor, Part, Plan, View
from ..sources.base import Checkpoint, SourceTensor
from .gguf_vocab import add_vocab, load_vocab
from .sharding import assign_shards, shard_name

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "i2_s")

FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0, "tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0,
}

# llama.cpp keeps these float32 whatever the file type (its converter and llama-quantize agree)
ALWAYS_F32 = {gguf.MODEL_TENSOR.FFN_GATE_INP, gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES}
EMBEDDINGS = {gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.OUTPUT}

NUMPY_ARRAY_TYPES = {
    gguf.GGUFValueType.UINT8: np.uint8, gguf.GGUFValueType.INT8: np.int8, gguf.GGUFValueType.UINT16: np.uint16,
    gguf.GGUFValueType.INT16: np.int16, gguf.GGUFValueType.UINT32: np.uint32, gguf.GGUFValueType.INT32: np.int32,
    gguf.GGUFValueType.FLOAT32: np.float32, gguf.GGUFValueType.UINT64: np.uint64, gguf.GGUFValueType.INT64: np.int64,
    gguf.GGUFValueType.FLOAT64: np.float64, gguf.GGUFValueType.BOOL: np.uint8,
}


def check_outtype(outtype: str | None) -> None:
    if outtype is not None and outtype not in OUTTYPES:
        raise ConversionError(f"--outtype {outtype} is not a GGUF type pyconv writes ({', '.join(OUTTYPES)})")


def tensor_type(outtype: str | None, source_dtype: str, kind: gguf.MODEL_TENSOR, name: str, shape: tuple[int, ...]) -> tuple[str, str]:
    """(GGUF type, why) for one tensor, following llama.cpp's rules."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return "f32", "1-d or norm: f32"
    if kind in ALWAYS_F32 or not name.endswith(".weight"):
        return "f32", f"{kind.name.lower()}: f32"
    if not dtypes.is_float(source_dtype) and not dtypes.is_quant(source_dtype):
        raise ConversionError(f"{source_dtype} weights cannot go into GGUF", tensor=name)
    want = outtype or (source_dtype if dtypes.is_float(source_dtype) and source_dtype != "f64" else "f32")
    if want in ("tq1_0", "tq2_0", "i2_s") and kind in EMBEDDINGS:
        return "f16", "embedding in a ternary file: f16"
    if dtypes.is_quant(want):
        block = 128 if want == "i2_s" else dtypes.block_elems(want)
        if shape[-1] % block:
            return "f16", f"rows of {shape[-1]} do not fit {want} blocks: f16"
    return want, ""


def kv_tuples(kv_data: dict[str, gguf.GGUFValue]) -> list[tuple[str, int, Any]]:
    """gguf-py's collected KVs in the engine's form; numeric arrays go packed."""
    out: list[tuple[str, int, Any]] = []
    for key, v in kv_data.items():
        if v.type == gguf.GGUFValueType.ARRAY:
            items = v.value
            # element type as gguf-py decides it when it writes (sub_type, else from the first item)
            sub = v.sub_type or (gguf.GGUFValueType.UINT8 if isinstance(items, bytes) else gguf.GGUFValueType.get_type(items[0]))
            if sub == gguf.GGUFValueType.STRING:
                value: Any = (int(sub), [s if isinstance(s, (str, bytes)) else bytes(s) for s in items])
            else:
                value = (int(sub), np.asarray(items, dtype=NUMPY_ARRAY_TYPES[sub]).tobytes())
            out.append((key, int(v.type), value))
        else:
            value = v.value
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8")
            out.append((key, int(v.type), value))
    return out


@dataclass
class MappedTensor:
    name: str
    kind: gguf.MODEL_TENSOR
    view: View | None            # one source view, or
    stacked: list[View] | None   # experts stacked along a new first dim
    source: str                  # for --dry-run notes


def rope_permuted(view: View, n_head: int) -> tuple[View, tuple[int, ...]]:
    """llama.cpp's Q/K row order: rows viewed as (head, 2, d/2) with the last two swapped."""
    rows = view.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"{rows} rows cannot be split into {n_head} rotary heads", tensor=view.tensor.name)
    permuted = view.reshape(n_head, 2, rows // n_head // 2, *view.shape[1:]).transpose(1, 2)
    return permuted, permuted.shape


class GgufMapper:
    """Walks a checkpoint's tensors through an architecture table."""

    def __init__(self, ck: Checkpoint, arch: Arch, cfg: Config) -> None:
        self.ck, self.arch, self.cfg = ck, arch, cfg
        self.n_blocks = int(cfg.require("num_hidden_layers", "n_layer", "n_layers"))
        self.names = gguf.get_tensor_name_map(arch.gguf_arch, self.n_blocks)

    def _gguf_name(self, hf: str, name: str) -> tuple[gguf.MODEL_TENSOR, str]:
        found = self.names.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ConversionError(f"no GGUF tensor for it in llama.cpp's '{self.arch.gguf_name}' architecture", tensor=hf)
        kind, gguf_name = found
        if not gguf_name.endswith((".weight", ".bias")):  # a bare nn.Parameter (fused experts) is a weight
            gguf_name += ".weight"
        return kind, gguf_name

    def _split(self, hf: str, name: str, t: SourceTensor) -> list[MappedTensor] | None:
        for split in self.arch.splits:
            if m := re.match(split.pattern, name):
                n = len(split.parts)
                rows = t.shape[split.dim]
                if rows % n:
                    raise ConversionError(f"dim {split.dim} of {t.shape} does not split into {n} equal parts", tensor=hf)
                views = View.of(t).split(split.dim, [rows // n] * n)
                return [MappedTensor(gguf.TENSOR_NAMES[kind].format(bid=int(m.group(1))) + ".weight", kind, view, None,
                                     f"{hf} part {i + 1}/{n}") for i, (kind, view) in enumerate(zip(split.parts, views))]
        return None

    def tensors(self) -> Iterable[MappedTensor]:
        experts: dict[tuple[int, str], dict[int, SourceTensor]] = {}
        n_experts = int(self.cfg.find(*self.arch.experts.count_fields) or 0) if self.arch.experts else 0
        for hf, t in self.ck.tensors.items():
            name = self.arch.base_name(hf)
            if self.arch.skipped(name):
                continue
            if (parts := self._split(hf, name, t)) is not None:
                yield from parts
                continue
            if self.arch.experts and (m := re.match(self.arch.experts.pattern, name)):
                layer, expert, part = int(m.group(1)), int(m.group(2)), m.group(3)
                group = experts.setdefault((layer, part), {})
                group[expert] = t
                if len(group) == n_experts:
                    kind = self.arch.experts.parts[part]
                    views = [View.of(group[e]) for e in range(n_experts)]
                    yield MappedTensor(gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight", kind, None, views,
                                       f"{n_experts} experts of layer {layer} '{part}'")
                    del experts[(layer, part)]
                continue
            kind, gguf_name = self._gguf_name(hf, name)
            yield MappedTensor(gguf_name, kind, View.of(t), None, hf)
        if experts:
            (layer, part), group = next(iter(experts.items()))
            raise ConversionError(f"layer {layer} '{part}' has {len(group)} of {n_experts} experts")

    def out_tensor(self, m: MappedTensor, outtype: str | None) -> OutTensor:
        arch, cfg = self.arch, self.cfg
        if m.stacked is not None:
            first = m.stacked[0]
            shape = (len(m.stacked), *first.shape)
            parts = [Part(v.reshape(1, *v.shape), (e,) + (0,) * first.ndim) for e, v in enumerate(m.stacked)]
            dtype, why = tensor_type(outtype, first.dtype, m.kind, m.name, shape)
            return OutTensor(m.name, shape, dtype, parts, note=" · ".join(x for x in (m.source, why) if x))
        assert m.view is not None
        view, layout = m.view, m.view.shape
        hf = m.view.tensor.name
        if arch.transposed and hf.endswith(arch.transposed):
            view = view.transpose()
            layout = view.shape
        shape = view.shape
        if arch.permute_qk and m.kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            n_head = int(cfg.require("num_attention_heads", "n_head"))
            if m.kind == gguf.MODEL_TENSOR.ATTN_K:
                n_head = int(cfg.find("num_key_value_heads", "n_kv_heads") or n_head)
            view, layout = rope_permuted(view, n_head)
        dtype, why = tensor_type(outtype, view.dtype, m.kind, m.name, shape)
        t = OutTensor(m.name, shape, dtype, [Part(view, (0,) * len(layout))], layout, note=why)
        if arch.norm_shift and hf.endswith("norm.weight"):
            t.ops.append(Op("add", arch.norm_shift))
        return t


def file_type(outtype: str | None, tensors: list[OutTensor]) -> int:
    if outtype is None:  # the type most 2-d weights ended up with
        counts: dict[str, int] = {}
        for t in tensors:
            if len(t.shape) >= 2:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        outtype = max(counts, key=lambda k: counts[k]) if counts else "f32"
    if outtype == "i2_s":
        return 40  # BitNet's LLAMA_FTYPE_MOSTLY_I2_S
    return int(FILE_TYPES.get(outtype, gguf.LlamaFileType.ALL_F32))


def metadata(ck: Checkpoint, arch: Arch, cfg: Config, tensors: list[OutTensor], opts: ConvertOptions) -> gguf.GGUFWriter:
    """All KVs of the (first) file, collected by a gguf-py writer that never writes a file."""
    w = gguf.GGUFWriter(None, arch.gguf_name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(opts.model_name or ck.folder.name)
    for hp in arch.hparams:
        value = hp.value(cfg)
        if value is not None:
            getattr(w, hp.method)(value)
    for method, value in arch.constants:
        getattr(w, method)(value)
    w.add_file_type(file_type(opts.outtype, tensors))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = Path(opts.tokenizer) if opts.tokenizer else None
    vocab, vocab_folder = load_vocab(ck.folder, cfg.find("vocab_size"), tokenizer=tokenizer, pre=opts.tokenizer_pre)
    add_vocab(w, vocab, vocab_folder)
    return w


def place(tensors: list[OutTensor], kvs: list[tuple[str, int, Any]], stem: str, opts: ConvertOptions) -> list[OutFile]:
    """One GGUF file, or llama.cpp split shards: all KVs in the first, split.* keys in every one."""
    shard_of = assign_shards([t.nbytes for t in tensors], opts.split_max_size, opts.split_max_tensors)
    n = (max(shard_of) + 1) if shard_of else 1
    files = [OutFile(shard_name(stem, i, n, ".gguf"), "gguf") for i in range(n)]
    for t, s in zip(tensors, shard_of):
        t.file = s
    for i, f in enumerate(files):
        split = []
        if n > 1:
            split = [(gguf.Keys.Split.LLM_KV_SPLIT_NO, int(gguf.GGUFValueType.UINT16), i),
                     (gguf.Keys.Split.LLM_KV_SPLIT_COUNT, int(gguf.GGUFValueType.UINT16), n),
                     (gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, int(gguf.GGUFValueType.INT32), len(tensors))]
        f.kvs = (kvs if i == 0 else []) + split
    return files


def plan_gguf(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    check_outtype(opts.outtype)
    if ck.config is None and ck.kind != "gguf":
        raise ConversionError("GGUF needs the model's config.json next to the weights", file=ck.folder)
    cfg = Config(ck.config or {}, ck.folder)
    arch = detect_arch(cfg, list(ck.tensors), opts.arch)
    mapper = GgufMapper(ck, arch, cfg)
    tensors = [mapper.out_tensor(m, opts.outtype) for m in mapper.tensors()]
    seen: dict[str, str] = {}
    for t in tensors:
        if t.name in seen:
            raise ConversionError(f"two tensors map to GGUF name '{t.name}'", tensor=t.name)
        seen[t.name] = t.name
    writer = metadata(ck, arch, cfg, tensors, opts)
    files = place(tensors, kv_tuples(writer.kv_data[0]), out.stem if out.suffix == ".gguf" else out.name, opts)
    plan = Plan(files, tensors)
    plan.late_files = [f"{f.name}.sha256" for f in files] + [f"{out.stem}.meta.json"]
    plan.notes.append(f"architecture {arch.name} → llama.cpp '{arch.gguf_name}'")
    return plan


def finish_gguf(plan: Plan, written: list[Path], ck: Checkpoint, opts: ConvertOptions,
                source_hashes: dict[Path, str]) -> dict[str, bytes]:
    """``<file>.sha256`` for every GGUF file and ``<stem>.meta.json`` describing the conversion."""
    import datetime
    import json

    from .. import __version__
    from ..fingerprint import sha256_file

    side: dict[str, bytes] = {}
    outputs = []
    for f, path in zip(plan.files, written):
        digest = sha256_file(path)
        side[f"{f.name}.sha256"] = f"sha256-{digest}\n".encode()
        outputs.append({"file": f.name, "bytes": path.stat().st_size, "sha256": digest})
    types: dict[str, int] = {}
    for t in plan.tensors:
        types[t.dtype] = types.get(t.dtype, 0) + 1
    options = {k: v for k, v in vars(opts).items() if v is not None and k not in ("progress", "dry_run", "force")}
    meta = {
        "pyconv_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": options,
        "architecture": next((n.split()[1] for n in plan.notes if n.startswith("architecture ")), None),
        "sources": [{"file": str(p), "bytes": p.stat().st_size, "sha256": source_hashes.get(p)} for p in ck.files],
        "outputs": outputs,
        "tensor_types": dict(sorted(types.items())),
    }
    late_meta = next(n for n in plan.late_files if n.endswith(".meta.json"))
    side[late_meta] = (json.dumps(meta, indent=2) + "\n").encode()
    return side
