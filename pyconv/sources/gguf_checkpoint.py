"""A GGUF file (or llama.cpp split set) as a conversion source: llama.cpp's tensor names and layout,
with the model's config and tokenizer in its own metadata.

What only such a source needs lives here, behind the ``Checkpoint`` methods the targets call: for an HF
folder the family's table maps the names back, undoes llama.cpp's Q/K permutation, GPT-2's transposes
and Gemma's norm offset, rejoins fused experts and rebuilds config.json from the KVs; for a GGUF output
the file is re-typed as it is (``targets/gguf_requant.py``).
"""

from __future__ import annotations

import enum
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..archs.arch import Arch
from ..archs.catalog import Catalog
from ..archs.config import Config
from ..archs.hparams import head_dim
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import Op, OutTensor, Part, Plan, View
from ..targets.gguf_requant import plan_requant, tensor_kind
from ..targets.hf_model import HfTensors
from ..targets.regions import concat
from .base import SourceTensor
from .checkpoint import Checkpoint
from .gguf import GgufValue, read_gguf, split_set

GGUF_F32 = int(gguf.GGUFValueType.FLOAT32)
GGUF_ARRAY = int(gguf.GGUFValueType.ARRAY)
BLOCK_ID = re.compile(r"^blk\.(\d+)\.")


@dataclass
class GgufCheckpoint(Checkpoint):
    format_name = "gguf"
    kv: dict[str, GgufValue] = field(default_factory=dict)   # the first file's, split.* keys left out
    version: int = 3

    @property
    def model_folder(self) -> Path | None:
        return None  # the file describes itself; what lies beside it belongs to other models

    @property
    def embedded_tokenizer(self) -> Path | None:
        return self.path

    def details(self) -> dict[str, Any]:
        return {"gguf_kv": self.kv, "gguf_version": self.version}

    def hf_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        return from_gguf(self, catalog, forced)

    def trainer_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        raise ConversionError("a GGUF file becomes a trainer checkpoint through an HF folder: convert it --to hf first",
                              file=self.path)

    def plan_gguf(self, out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
        return plan_requant(self, self.kv, out, opts, catalog)


def recognises(path: Path) -> bool:
    return path.is_file() and path.suffix == ".gguf"


def open_gguf(path: Path) -> GgufCheckpoint:
    files = split_set(path)
    parsed = [read_gguf(f) for f in files]
    tensors: dict[str, SourceTensor] = {}
    for g in parsed:
        for name, t in g.tensors.items():
            if name in tensors:
                raise ConversionError("tensor appears in two files of the split set", file=g.path, tensor=name)
            tensors[name] = t
    kv = {k: v for k, v in parsed[0].kv.items() if not k.startswith("split.")}
    arch = kv.get("general.architecture")
    meta = {"architecture": str(arch.value)} if arch else {}
    return GgufCheckpoint(path, tensors, files, meta, None, kv=kv, version=parsed[0].version)


def table_of(ck: GgufCheckpoint, catalog: Catalog, forced: str | None) -> Arch:
    """The table for a GGUF file: among the families with its llama.cpp architecture and HF names for all
    its tensors, the one ``general.name`` mentions, else the first."""
    if forced:
        return catalog.named(forced)
    name = str(ck.kv["general.architecture"].value)
    kinds = {tensor_kind(n) for n in ck.tensors}
    tables = catalog.tables.values()
    fits = [a for a in tables if a.gguf.name == name and a.hf.names and kinds <= set(a.hf.names)]
    if not fits:
        known = sorted({a.gguf.name for a in tables if a.hf.names})
        raise ConversionError(f"pyconv has no HF names for GGUF architecture '{name}' with these tensors "
                              f"(it maps {', '.join(known)} back)", file=ck.path)
    title = str(ck.kv["general.name"].value).lower() if "general.name" in ck.kv else ""
    return next((a for a in fits if a.name in title), fits[0])


def writer_key(arch: Arch, method: str) -> str | None:
    """The GGUF key a GGUFWriter method writes, found by asking a writer that never writes a file."""
    w = gguf.GGUFWriter(None, arch.gguf.name)
    before = set(w.kv_data[0])
    write = getattr(w, method)
    # a method taking one of gguf-py's enums (rope scaling, pooling) is asked with a member of it
    kind = getattr(gguf, str(next(iter(inspect.signature(write).parameters.values())).annotation), None)
    try:
        write(next(iter(kind)) if isinstance(kind, type) and issubclass(kind, enum.Enum) else 1)
    except (TypeError, ValueError, AttributeError):
        return None
    added = set(w.kv_data[0]) - before
    return added.pop() if len(added) == 1 else None


def plain_value(value: GgufValue) -> Any:
    """A GGUF scalar as JSON writes it; float32 values by their shortest float32 spelling (1e-05, not
    9.999999747378752e-06)."""
    if value.type == GGUF_F32:
        return float(str(np.float32(value.value)))
    return value.value.item() if hasattr(value.value, "item") else value.value


def config_from_gguf(ck: GgufCheckpoint, arch: Arch) -> dict[str, Any]:
    """config.json for the family from the file's hyper-parameters: each table entry read back from the
    key its GGUFWriter method writes into the entry's first config field."""
    kv = ck.kv
    config: dict[str, Any] = {"architectures": [arch.hf_architectures[0]], "model_type": arch.model_types[0]}
    for hp in arch.gguf.hparams:
        key = writer_key(arch, hp.method) if hp.fields or hp.back else None
        if key is None or key not in kv:
            continue
        value = np.asarray(kv[key].value).tolist() if kv[key].type == GGUF_ARRAY else plain_value(kv[key])
        if hp.back:
            config.update(hp.back(value, config))
        else:
            config[hp.fields[0]] = value
    for flag in arch.hf.flags:
        config[flag.field] = any(re.search(flag.pattern, n) for n in ck.tensors) == flag.present
    embed = next(t for n, t in ck.tensors.items() if tensor_kind(n) == gguf.MODEL_TENSOR.TOKEN_EMBD)
    config["vocab_size"] = embed.shape[0]
    config["tie_word_embeddings"] = not any(tensor_kind(n) == gguf.MODEL_TENSOR.OUTPUT for n in ck.tensors)
    for field_name, key in (("bos_token_id", gguf.Keys.Tokenizer.BOS_ID), ("eos_token_id", gguf.Keys.Tokenizer.EOS_ID),
                            ("pad_token_id", gguf.Keys.Tokenizer.PAD_ID)):
        if key in kv:
            config[field_name] = int(kv[key].value)
    return config


def rope_unpermuted(view: View, n_head: int) -> tuple[View, tuple[int, ...]]:
    """HF's Q/K row order from llama.cpp's: rows (head, d/2, 2) read as (head, 2, d/2)."""
    rows = view.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"{rows} rows cannot be split into {n_head} rotary heads", tensor=view.tensor.name)
    unpermuted = view.reshape(n_head, rows // n_head // 2, 2, *view.shape[1:]).transpose(1, 2)
    return unpermuted, unpermuted.shape


def heads_after_parts(view: View, n_head: int, d_head: int) -> tuple[View, tuple[int, ...]]:
    """A fused projection's rows from llama.cpp's (part, head, d) back to HF's per-head grouping (head, part, d)."""
    rows = view.shape[0]
    if rows % (n_head * d_head):
        raise ConversionError(f"{rows} rows are not whole groups of {n_head} heads of {d_head}", tensor=view.tensor.name)
    regrouped = view.reshape(rows // (n_head * d_head), n_head, d_head, *view.shape[1:]).transpose(0, 1)
    return regrouped, regrouped.shape


def groups_of_heads(view: View, n_head: int, n_kv: int, d_head: int) -> tuple[tuple[int, ...], list[Part]]:
    """llama.cpp's fused rows (every query head, every key head, every value head) as boxes of HF's per-group
    layout (group, n_head/n_kv queries + key + value, d)."""
    rows, rest = view.shape[0], view.shape[1:]
    per = n_head // n_kv if n_kv and n_head % n_kv == 0 else 0
    if not per or rows != (n_head + 2 * n_kv) * d_head:
        raise ConversionError(f"{rows} rows are not {n_head} query heads plus {n_kv} key and value heads of {d_head}",
                              tensor=view.tensor.name)
    q, k, v = view.split(0, [n_head * d_head, n_kv * d_head, n_kv * d_head])
    zeros = (0,) * len(rest)
    return (n_kv, per + 2, d_head, *rest), [Part(q.reshape(n_kv, per, d_head, *rest), (0, 0, 0, *zeros)),
                                            Part(k.reshape(n_kv, 1, d_head, *rest), (0, per, 0, *zeros)),
                                            Part(v.reshape(n_kv, 1, d_head, *rest), (0, per + 1, 0, *zeros))]


def from_gguf(ck: GgufCheckpoint, catalog: Catalog, forced: str | None) -> HfTensors:
    arch = table_of(ck, catalog, forced)
    fixes = arch.gguf
    config = config_from_gguf(ck, arch)
    cfg = Config(config)
    n_head = int(cfg.require("num_attention_heads", "n_head"))
    n_kv = int(cfg.find("num_key_value_heads") or n_head)
    pieces: dict[str, list[tuple[int, OutTensor]]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for name, t in ck.tensors.items():
        kind = tensor_kind(name)
        hn = arch.hf.names.get(kind) if kind is not None else None
        if hn is None:
            raise ConversionError(f"no HF name for it in the '{arch.name}' table", file=ck.path, tensor=name)
        block = BLOCK_ID.match(name)
        hf = hn.template.format(bid=block.group(1) if block else "")
        if not hn.bare:
            hf += name[name.rindex("."):]
        view = View.of(t)
        if fixes.transposed and hf.endswith(fixes.transposed):
            view = view.transpose()
        if kind in fixes.squeezed:
            view = view.reshape(view.shape[0], 1, *view.shape[1:])
        shape = layout = view.shape
        if fixes.permute_qk and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            view, layout = rope_unpermuted(view, n_head if kind == gguf.MODEL_TENSOR.ATTN_Q else n_kv)
        if kind in fixes.head_grouped:
            view, layout = heads_after_parts(view, n_head, head_dim(cfg))
        parts = [Part(view, (0,) * len(layout))]
        if kind in fixes.kv_grouped:
            n_kv_file = int(ck.kv[gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=fixes.name)].value)
            layout, parts = groups_of_heads(view, n_head, n_kv_file, head_dim(cfg))
        out = OutTensor(hf, shape, t.dtype, parts, layout, note=f"from {name}")
        if fixes.norm_shift and hf.endswith("norm.weight"):
            out.ops.append(Op("add", -fixes.norm_shift))
        pieces.setdefault(hf, []).append((hn.part, out))
        shapes[hf] = (hn.dim, hn.of)
    tensors = []
    for hf, found in pieces.items():
        dim, of = shapes[hf]
        if len(found) != of:
            raise ConversionError(f"GGUF holds {len(found)} of the {of} parts of '{hf}'", file=ck.path)
        ordered = [t for _i, t in sorted(found, key=lambda x: x[0])]
        tensors.append(ordered[0] if of == 1 else concat(hf, ordered, dim))
    return HfTensors(tensors, arch, config, [f"GGUF '{fixes.name}' → HF {arch.hf_architectures[0]}"])
