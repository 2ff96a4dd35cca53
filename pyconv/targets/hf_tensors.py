"""A state dict's tensors under their Hugging Face names and layout, as recipes not yet typed.

HF-style sources (safetensors, torch, ZeRO, native) keep their names; buffers transformers 5 no longer
loads are dropped and ties follow transformers 5 (one key plus ``tie_word_embeddings: true``, or both
keys plus ``false``). A GGUF source maps itself back (``sources/gguf_checkpoint.py``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .. import dtypes
from ..archs.arch import Arch
from ..archs.catalog import Catalog
from ..errors import ConversionError
from ..plan import OutTensor, View
from ..sources.base import SourceTensor
from ..sources.checkpoint import Checkpoint
from .hf_model import HfTensors
from .regions import crop

log = logging.getLogger("pyconv")


def source_dtype(view_dtype: str, outtype: str | None) -> str:
    """``outtype`` for floats, f32 for dequantized GGUF blocks; integers stay what they are."""
    if dtypes.is_quant(view_dtype):
        return outtype or "f32"
    if outtype is not None and dtypes.is_float(view_dtype):
        return outtype
    return view_dtype


def same_bytes(a: SourceTensor, b: SourceTensor) -> bool:
    return (a.segments, a.offset, a.strides, a.shape, a.dtype, a.scale) == (b.segments, b.offset, b.strides, b.shape, b.dtype, b.scale)


def _tie(arch: Arch | None, config: dict[str, Any], names: dict[str, SourceTensor], notes: list[str]) -> None:
    if arch is None or arch.hf.tie_names is None:
        return
    embed, head = arch.hf.tie_names
    if embed not in names:
        return
    tied = bool(config.get("tie_word_embeddings", arch.hf.tied_default))
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


def from_hf_source(ck: Checkpoint, catalog: Catalog, forced: str | None, *, need_arch: bool = False) -> HfTensors:
    """The source's tensors; without ``need_arch`` a family pyconv has no table for passes as it is."""
    if ck.config is None and not need_arch:
        # shapes alone do not tell heads or norms' epsilon: a loadable folder needs the config
        raise ConversionError("no config.json beside the weights: an HF folder needs one (heads, eps, rope) that "
                              "tensor shapes cannot tell; put the model's config.json beside the weights", file=ck.folder)
    config = dict(ck.config or {})
    arch: Arch | None
    try:
        arch = catalog.detect(config, list(ck.tensors), forced, guess_unknown=True)
    except ConversionError:
        if need_arch:
            raise
        arch = None  # transformers may know it even if pyconv has no table: the tensors go as they are
    names = dict(ck.tensors)
    notes: list[str] = []
    if arch is not None:
        dropped = [n for n in names if any(re.search(p, n) for p in arch.hf.buffers)]
        for n in dropped:
            del names[n]
        if dropped:
            notes.append(f"dropped {len(dropped)} buffers transformers 5 does not load, e.g. '{dropped[0]}'")
    _tie(arch, config, names, notes)
    tensors = [OutTensor.from_view(n, View.of(t), t.value_dtype) for n, t in names.items()]
    return HfTensors(tensors, arch, config, notes)


def resize_vocab(ht: HfTensors, vocab_size: int) -> None:
    """Embedding and output head padded with zero rows or truncated to ``vocab_size``, with a warning."""
    if ht.arch is None or ht.arch.hf.tie_names is None:
        raise ConversionError("--vocab-size needs an architecture pyconv knows (to find the embedding and head)")
    for i, t in enumerate(ht.tensors):
        if t.name not in ht.arch.hf.tie_names or t.shape[0] == vocab_size:
            continue
        rows = t.shape[0]
        if vocab_size > rows:
            log.warning("'%s': rows %d..%d added as zeros (vocabulary %d → %d)", t.name, rows, vocab_size - 1, rows, vocab_size)
        else:
            log.warning("'%s': rows %d..%d dropped (vocabulary %d → %d)", t.name, vocab_size, rows - 1, rows, vocab_size)
        ht.tensors[i] = crop(t, 0, 0, vocab_size)
    ht.config["vocab_size"] = vocab_size
