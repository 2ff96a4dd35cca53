"""The GGUF part of a family's table: llama.cpp's architecture, its hyper-parameters, and the layout
fixes between HF's tensors and the graph's: Q/K rotary permutation, norm offsets, transposed weights,
stacked or split experts, fused or split projections, tensors to drop. GGUF tensor names come from
gguf-py's ``TensorNameMap`` for the architecture, plus ``extra_names``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gguf

from .hparams import COMMON_HPARAMS, HParam


@dataclass(frozen=True)
class ExpertStack:
    """Per-expert 2-d weights (``...experts.{e}.<part>.weight``) stacked into one 3-d GGUF tensor per part."""

    pattern: str                      # regex with groups (layer, expert, part)
    parts: Mapping[str, gguf.MODEL_TENSOR]
    count_fields: tuple[str, ...]     # config fields holding the expert count


@dataclass(frozen=True)
class Split:
    """A fused HF tensor llama.cpp wants as separate tensors: cut into equal parts along ``dim``."""

    pattern: str                          # regex on the HF name; group 1 is the layer
    dim: int
    parts: tuple[gguf.MODEL_TENSOR, ...]  # in the order they are stacked in the fused tensor


@dataclass(frozen=True)
class Fuse:
    """Separate HF tensors llama.cpp wants as one: concatenated along dim 0 in the order of ``parts``
    (templates with {bid} for the layer, without .weight/.bias, which the fused tensor keeps)."""

    parts: tuple[str, ...]
    kind: gguf.MODEL_TENSOR


@dataclass(frozen=True)
class Requires:
    """A config setting the GGUF architecture's graph cannot vary: another value is refused, saying ``why``."""

    field: str
    value: Any
    why: str


@dataclass(frozen=True)
class GgufLayout:
    """How the family's HF tensors and config become a llama.cpp GGUF, and back."""

    arch: gguf.MODEL_ARCH
    hparams: tuple[HParam, ...] = COMMON_HPARAMS
    # llama.cpp's "llama" graph rotates pairs (x[i], x[i + d/2]) after permuting Q/K rows; HF
    # checkpoints hold them unpermuted
    permute_qk: bool = False
    # added to every "*norm.weight" for GGUF (gemma stores w - 1)
    norm_shift: float = 0.0
    # weights stored [in, out] (GPT-2's Conv1D), transposed for GGUF
    transposed: tuple[str, ...] = ()
    # tensors HF keeps with a middle axis of 1 (depthwise convolution kernels [channels, 1, width]) that the
    # graph reads as matrices
    squeezed: tuple[gguf.MODEL_TENSOR, ...] = ()
    experts: ExpertStack | None = None
    splits: tuple[Split, ...] = ()
    fuses: tuple[Fuse, ...] = ()
    # fused projections stored grouped per head (rows as (head, part, head_dim)) that llama.cpp's graph
    # reads part after part (rows as (part, head, head_dim))
    head_grouped: tuple[gguf.MODEL_TENSOR, ...] = ()
    # fused q/k/v projections stored per key-value group (rows as (group, its query heads then one key and one
    # value head, head_dim)) that llama.cpp's graph reads as all queries, all keys, all values
    kv_grouped: tuple[gguf.MODEL_TENSOR, ...] = ()
    requires: tuple[Requires, ...] = ()
    # HF tensors llama.cpp has no use for (regexes)
    skip: tuple[str, ...] = ()
    # extra hyper-parameters that are constants for the family: (GGUFWriter method, value)
    constants: tuple[tuple[str, Any], ...] = ()
    # sub-folders of the checkpoint holding its tokenizer, for trainer layouts that keep it apart
    tokenizer_dirs: tuple[str, ...] = ()
    # token text ({}: the id) for ids past the tokenizer's, up to the model's vocabulary, as the family's
    # trainer names them; None: unused placeholders
    vocab_filler: str | None = None
    # how the projections are ternarized unless --ternarize says otherwise ("absmean": the model's
    # forward pass ternarizes them); None: only with --ternarize
    ternarize: str | None = None
    # GGUF architecture name per out type whose runtime names the graph differently
    arch_names: Mapping[str, str] = field(default_factory=dict)
    # the FFN activation each GGUF architecture's graph applies, checked against config.json's hidden_act
    graph_activations: Mapping[str, str] = field(default_factory=dict)
    # HF name templates ({bid}: layer) gguf-py's TensorNameMap lacks for the architecture
    extra_names: Mapping[str, gguf.MODEL_TENSOR] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]

    def name_for(self, outtype: str | None) -> str:
        return self.arch_names.get(outtype or "", self.name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every GGUF architecture name this layout writes, whatever the out type."""
        return (self.name, *self.arch_names.values())

    @property
    def literal_keys(self) -> tuple[str, ...]:
        """Keys another runtime reads under a literal name, whatever ``general.architecture`` says."""
        return tuple(hp.key for hp in self.hparams if hp.key)

    def skipped(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.skip)
