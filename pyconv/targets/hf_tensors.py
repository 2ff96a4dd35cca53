"""A checkpoint's tensors under their Hugging Face names and layout, as recipes not yet typed.

HF-style sources (safetensors, torch, ZeRO, native) keep their names; buffers transformers 5 no longer
loads are dropped and ties follow transformers 5 (one key plus ``tie_word_embeddings: true``, or both
keys plus ``false``). GGUF sources are mapped back through the family's ``hf_names`` table: names,
GPT-2's transposes, llama's Q/K row permutation and gemma's norm offset undone, fused experts rejoined.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import gguf
import numpy as np

from .. import dtypes
from ..archs.base import Arch, Config, detect_arch, tables
from ..errors import ConversionError
from ..plan import Op, OutTensor, Part, View
from ..sources.base import Checkpoint, SourceTensor
from ..sources.gguf import GgufValue
from .gguf_requant import tensor_kind
from .regions import concat, crop

log = logging.getLogger("pyconv")

GGUF_F32 = int(gguf.GGUFValueType.FLOAT32)
BLOCK_ID = re.compile(r"^blk\.(\d+)\.")


@dataclass
class HfTensors:
    """What a target needs to write a Hugging Face model: recipes in order, the family (None when the
    config names one pyconv has no table for) and config.json as it must be written."""

    tensors: list[OutTensor]
    arch: Arch | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # files shipped beside the weights as they are (the modeling code of trust_remote_code folders)
    files: dict[str, bytes] = field(default_factory=dict)
    # tokenizer files the family prepared itself; None: those beside the weights, normalized
    tokenizer: dict[str, bytes] | None = None


def source_dtype(view_dtype: str, outtype: str | None) -> str:
    """``outtype`` for floats, f32 for dequantized GGUF blocks; integers stay what they are."""
    if dtypes.is_quant(view_dtype):
        return outtype or "f32"
    if outtype is not None and dtypes.is_float(view_dtype):
        return outtype
    return view_dtype


def same_bytes(a: SourceTensor, b: SourceTensor) -> bool:
    return (a.segments, a.offset, a.strides, a.shape, a.dtype) == (b.segments, b.offset, b.strides, b.shape, b.dtype)


def _tie(ck: Checkpoint, arch: Arch | None, config: dict[str, Any], names: dict[str, SourceTensor], notes: list[str]) -> None:
    if arch is None or arch.tie_names is None:
        return
    embed, head = arch.tie_names
    if embed not in names:
        return
    tied = bool(config.get("tie_word_embeddings", arch.tied_default))
    if head not in names:
        if not tied:
            notes.append(f"no '{head}' in the checkpoint: the head is tied to '{embed}'")
        tied = True
    elif tied:
        if not same_bytes(names[head], names[embed]):
            log.warning("config.json ties '%s' to '%s', so the checkpoint's own '%s' is dropped as transformers "
                        "would ignore it", head, embed, head)
        del names[head]
    config["tie_word_embeddings"] = tied


def from_hf_source(ck: Checkpoint, forced: str | None, *, need_arch: bool = False) -> HfTensors:
    """The source's tensors; without ``need_arch`` a family pyconv has no table for passes as it is."""
    if ck.config is None and not need_arch:
        # shapes alone do not tell heads or norms' epsilon: a loadable folder needs the config
        raise ConversionError("no config.json beside the weights: an HF folder needs one (heads, eps, rope) that "
                              "tensor shapes cannot tell; put the model's config.json beside the weights", file=ck.folder)
    config = dict(ck.config or {})
    arch: Arch | None
    try:
        arch = detect_arch(config, list(ck.tensors), forced, guess_unknown=True)
    except ConversionError:
        if need_arch:
            raise
        arch = None  # transformers may know it even if pyconv has no table: the tensors go as they are
    names = dict(ck.tensors)
    notes: list[str] = []
    if arch is not None:
        dropped = [n for n in names if any(re.search(p, n) for p in arch.hf_buffers)]
        for n in dropped:
            del names[n]
        if dropped:
            notes.append(f"dropped {len(dropped)} buffers transformers 5 does not load, e.g. '{dropped[0]}'")
    _tie(ck, arch, config, names, notes)
    tensors = [OutTensor.from_view(n, View.of(t), t.dtype) for n, t in names.items()]
    return HfTensors(tensors, arch, config, notes)


def gguf_arch(ck: Checkpoint, forced: str | None) -> Arch:
    """The table for a GGUF file: among the families with its llama.cpp architecture and HF names for all
    its tensors, the one ``general.name`` mentions, else the first."""
    if forced:
        return detect_arch(None, [], forced)
    kv = ck.extra["gguf_kv"]
    name = str(kv["general.architecture"].value)
    kinds = {tensor_kind(n) for n in ck.tensors}
    fits = [a for a in tables().values() if a.gguf_name == name and a.hf_names and kinds <= set(a.hf_names)]
    if not fits:
        known = sorted({a.gguf_name for a in tables().values() if a.hf_names})
        raise ConversionError(f"pyconv has no HF names for GGUF architecture '{name}' with these tensors "
                              f"(it maps {', '.join(known)} back)", file=ck.path)
    title = str(kv["general.name"].value).lower() if "general.name" in kv else ""
    return next((a for a in fits if a.name in title), fits[0])


def _gguf_key(arch: Arch, method: str) -> str | None:
    """The GGUF key a GGUFWriter method writes, found by asking a writer that never writes a file."""
    w = gguf.GGUFWriter(None, arch.gguf_name)
    before = set(w.kv_data[0])
    try:
        getattr(w, method)(1)
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


def config_from_gguf(ck: Checkpoint, arch: Arch) -> dict[str, Any]:
    """config.json for the family from the file's hyper-parameters: each table entry read back from the
    key its GGUFWriter method writes into the entry's first config field."""
    kv = ck.extra["gguf_kv"]
    config: dict[str, Any] = {"architectures": [arch.hf_architectures[0]], "model_type": arch.model_types[0]}
    for hp in arch.hparams:
        key = _gguf_key(arch, hp.method) if hp.fields else None
        if key is not None and key in kv:
            config[hp.fields[0]] = plain_value(kv[key])
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


def from_gguf(ck: Checkpoint, forced: str | None) -> HfTensors:
    arch = gguf_arch(ck, forced)
    config = config_from_gguf(ck, arch)
    cfg = Config(config)
    n_head = int(cfg.require("num_attention_heads", "n_head"))
    n_kv = int(cfg.find("num_key_value_heads") or n_head)
    pieces: dict[str, list[tuple[int, OutTensor]]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for name, t in ck.tensors.items():
        kind = tensor_kind(name)
        hn = arch.hf_names.get(kind) if kind is not None else None
        if hn is None:
            raise ConversionError(f"no HF name for it in the '{arch.name}' table", file=ck.path, tensor=name)
        block = BLOCK_ID.match(name)
        hf = hn.template.format(bid=block.group(1) if block else "")
        if not hn.bare:
            hf += name[name.rindex("."):]
        view = View.of(t)
        if arch.transposed and hf.endswith(arch.transposed):
            view = view.transpose()
        shape = layout = view.shape
        if arch.permute_qk and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            view, layout = rope_unpermuted(view, n_head if kind == gguf.MODEL_TENSOR.ATTN_Q else n_kv)
        out = OutTensor(hf, shape, t.dtype, [Part(view, (0,) * len(layout))], layout, note=f"from {name}")
        if arch.norm_shift and hf.endswith("norm.weight"):
            out.ops.append(Op("add", -arch.norm_shift))
        pieces.setdefault(hf, []).append((hn.part, out))
        shapes[hf] = (hn.dim, hn.of)
    tensors = []
    for hf, found in pieces.items():
        dim, of = shapes[hf]
        if len(found) != of:
            raise ConversionError(f"GGUF holds {len(found)} of the {of} parts of '{hf}'", file=ck.path)
        ordered = [t for _i, t in sorted(found, key=lambda x: x[0])]
        tensors.append(ordered[0] if of == 1 else concat(hf, ordered, dim))
    return HfTensors(tensors, arch, config, [f"GGUF '{arch.gguf_name}' → HF {arch.hf_architectures[0]}"])


def hf_tensors(ck: Checkpoint, forced: str | None) -> HfTensors:
    return from_gguf(ck, forced) if ck.kind == "gguf" else from_hf_source(ck, forced)


def resize_vocab(ht: HfTensors, vocab_size: int) -> None:
    """Embedding and output head padded with zero rows or truncated to ``vocab_size``, with a warning."""
    if ht.arch is None or ht.arch.tie_names is None:
        raise ConversionError("--vocab-size needs an architecture pyconv knows (to find the embedding and head)")
    for i, t in enumerate(ht.tensors):
        if t.name not in ht.arch.tie_names or t.shape[0] == vocab_size:
            continue
        rows = t.shape[0]
        if vocab_size > rows:
            log.warning("'%s': rows %d..%d added as zeros (vocabulary %d → %d)", t.name, rows, vocab_size - 1, rows, vocab_size)
        else:
            log.warning("'%s': rows %d..%d dropped (vocabulary %d → %d)", t.name, vocab_size, rows - 1, rows, vocab_size)
        ht.tensors[i] = crop(t, 0, 0, vocab_size)
    ht.config["vocab_size"] = vocab_size
