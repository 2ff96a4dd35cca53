"""Architecture tables: everything pyconv knows about a model family, as data.

A table names the Hugging Face classes it covers, the GGUF architecture, the hyper-parameters
(as gguf-py ``GGUFWriter.add_*`` methods fed from config fields, so keys and value types come from
gguf-py), and the layout fixes between the two worlds: Q/K rotary permutation, norm offsets,
transposed weights, stacked or split experts, wrapper prefixes and tensors to drop. GGUF tensor
names come from gguf-py's ``TensorNameMap`` for the architecture. Add a family by adding a table.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from ..errors import ConversionError
from .layouts import HfName, Regroup

log = logging.getLogger("pyconv")

# config.json fields that are counts or sizes (GGUF stores them as uint32) and fields that are positive
# numbers. A config comes from the user's files: where one of these holds anything else, the conversion
# stops at the field instead of dividing by it or handing it to the GGUF writer.
COUNT_FIELDS = frozenset({
    "hidden_size", "n_embd", "dim", "num_hidden_layers", "n_layer", "n_layers", "num_attention_heads", "n_head",
    "n_heads", "num_key_value_heads", "n_kv_heads", "head_dim", "intermediate_size", "n_inner", "hidden_dim",
    "vocab_size", "max_position_embeddings", "n_ctx", "n_positions", "max_sequence_length", "num_local_experts",
    "num_experts", "num_experts_per_tok"})
POSITIVE_FIELDS = frozenset({"rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "rope_theta"})


def checked_field(name: str, value: Any, file: Path | None) -> Any:
    """``value`` of config field ``name`` (from ``file``), refused when the field is a count, size or positive
    number and the value is not one."""
    if value is None:
        return None
    if name in COUNT_FIELDS and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 32):
        raise ConversionError(f"{name} is {value!r}, not a positive integer below 2^32", file=file)
    if name in POSITIVE_FIELDS and (not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf):
        raise ConversionError(f"{name} is {value!r}, not a positive number", file=file)
    return value


class Config(Mapping[str, Any]):
    """config.json with lookups that also see ``rope_parameters`` (transformers 5) and ``rope_scaling``.
    ``folder`` is where it was found, for the few settings kept in other files beside it."""

    def __init__(self, data: Mapping[str, Any], folder: Path | None = None) -> None:
        self.data = dict(data)
        self.folder = folder
        text = self.data.get("text_config")
        if isinstance(text, dict):  # multimodal wrappers keep the language model's fields here
            self.data = {**self.data, **text}

    @property
    def file(self) -> Path | None:
        return self.folder / "config.json" if self.folder else None

    def __getitem__(self, key: str) -> Any:
        return checked_field(key, self.data[key], self.file)

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def rope(self) -> dict[str, Any]:
        for key in ("rope_parameters", "rope_scaling"):
            value = self.data.get(key)
            if isinstance(value, dict):
                value = value.get("full_attention", value)
                if not isinstance(value, dict):
                    raise ConversionError(f"{key} is {self.data[key]!r}, not rope settings", file=self.file)
                return value
        return {}

    def find(self, *names: str) -> Any:
        for name in names:
            if name in self.data and self.data[name] is not None:
                return checked_field(name, self.data[name], self.file)
            if name in self.rope and self.rope[name] is not None:
                return checked_field(name, self.rope[name], self.file)
        return None

    def require(self, *names: str) -> Any:
        value = self.find(*names)
        if value is None:
            raise ConversionError(f"config.json has none of {', '.join(names)}")
        return value


@dataclass(frozen=True)
class HParam:
    """One GGUF hyper-parameter: ``method`` of gguf.GGUFWriter, fed from the first config field
    present in ``fields`` or computed by ``derive``. Optional ones are skipped when absent. ``key``
    names a key gguf-py has no method for; ``method`` is then a typed one (``add_uint32``)."""

    method: str
    fields: tuple[str, ...] = ()
    derive: Callable[[Config], Any] | None = None
    required: bool = True
    key: str | None = None

    def value(self, cfg: Config) -> Any:
        value = self.derive(cfg) if self.derive else cfg.find(*self.fields)
        if value is None and self.required:
            raise ConversionError(f"config.json has none of {', '.join(self.fields) or self.method} needed for GGUF")
        return value


def head_dim(cfg: Config) -> int:
    return int(cfg.find("head_dim") or cfg.require("hidden_size", "n_embd") // cfg.require("num_attention_heads", "n_head"))


# The hyper-parameters most decoder families share (llama.cpp's converter writes the same set).
COMMON_HPARAMS: tuple[HParam, ...] = (
    HParam("add_context_length", ("max_position_embeddings", "n_ctx", "n_positions", "max_sequence_length")),
    HParam("add_embedding_length", ("hidden_size", "n_embd", "dim")),
    HParam("add_block_count", ("num_hidden_layers", "n_layer", "n_layers")),
    HParam("add_feed_forward_length", ("intermediate_size", "n_inner", "hidden_dim"), required=False),
    HParam("add_head_count", ("num_attention_heads", "n_head", "n_heads")),
    HParam("add_head_count_kv", ("num_key_value_heads", "n_kv_heads"), required=False),
    HParam("add_rope_freq_base", ("rope_theta",), required=False),
    HParam("add_layer_norm_rms_eps", ("rms_norm_eps",), required=False),
    HParam("add_layer_norm_eps", ("layer_norm_eps", "layer_norm_epsilon"), required=False),
    HParam("add_expert_count", ("num_local_experts", "num_experts"), required=False),
    HParam("add_expert_used_count", ("num_experts_per_tok",), required=False),
    HParam("add_key_length", ("head_dim",), required=False),
    HParam("add_value_length", ("head_dim",), required=False),
)


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
class Arch:
    name: str
    hf_architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    gguf_arch: gguf.MODEL_ARCH
    hparams: tuple[HParam, ...] = COMMON_HPARAMS
    # llama.cpp's "llama" graph rotates pairs (x[i], x[i + d/2]) after permuting Q/K rows; HF
    # checkpoints hold them unpermuted
    permute_qk: bool = False
    # added to every "*norm.weight" for GGUF (gemma stores w - 1)
    norm_shift: float = 0.0
    # weights stored [in, out] (GPT-2's Conv1D), transposed for GGUF
    transposed: tuple[str, ...] = ()
    experts: ExpertStack | None = None
    splits: tuple[Split, ...] = ()
    fuses: tuple[Fuse, ...] = ()
    # fused projections stored grouped per head (rows as (head, part, head_dim)) that llama.cpp's graph
    # reads part after part (rows as (part, head, head_dim))
    head_grouped: tuple[gguf.MODEL_TENSOR, ...] = ()
    requires: tuple[Requires, ...] = ()
    # task-head wrappers keep the base model under a prefix (BertForMaskedLM: "bert."); names are
    # looked up, skipped and split without it
    prefixes: tuple[str, ...] = ()
    # HF tensors llama.cpp has no use for (regexes)
    skip: tuple[str, ...] = ()
    # extra hyper-parameters that are constants for the family: (GGUFWriter method, value)
    constants: tuple[tuple[str, Any], ...] = ()
    # sub-folders of the checkpoint holding its tokenizer, for trainer layouts that keep it apart
    tokenizer_dirs: tuple[str, ...] = ()
    # token text ({}: the id) for ids past the tokenizer's, up to the model's vocabulary, as the family's
    # trainer names them; None: unused placeholders
    vocab_filler: str | None = None
    # --- the Hugging Face side ---
    # HF name of each GGUF tensor kind (GGUF → HF); empty: transformers cannot take the family from GGUF
    hf_names: Mapping[gguf.MODEL_TENSOR, HfName] = field(default_factory=dict)
    # the trainer's fused layout against HF's (``--layout fused``)
    fused: tuple[Regroup, ...] = ()
    # regexes that together recognise the family's tensor names when no config.json tells it
    signature: tuple[str, ...] = ()
    # the config class's tie_word_embeddings default, for configs that leave it out
    tied_default: bool = False
    # buffers older checkpoints saved that transformers 5 no longer loads (regexes)
    hf_buffers: tuple[str, ...] = ()
    # --- ternary models ---
    # how the projections are ternarized unless --ternarize says otherwise ("absmean": the model's
    # forward pass ternarizes them); None: only with --ternarize
    ternarize: str | None = None
    # GGUF architecture name per out type whose runtime names the graph differently
    gguf_names: Mapping[str, str] = field(default_factory=dict)
    # the FFN activation each GGUF architecture's graph applies, checked against config.json's hidden_act
    graph_activations: Mapping[str, str] = field(default_factory=dict)
    # HF name templates ({bid}: layer) gguf-py's TensorNameMap lacks for the architecture
    extra_names: Mapping[str, gguf.MODEL_TENSOR] = field(default_factory=dict)

    @property
    def tie_names(self) -> tuple[str, str] | None:
        """(embedding, output head) weight names, which ``tie_word_embeddings`` ties."""
        embed, head = self.hf_names.get(gguf.MODEL_TENSOR.TOKEN_EMBD), self.hf_names.get(gguf.MODEL_TENSOR.OUTPUT)
        return (f"{embed.template}.weight", f"{head.template}.weight") if embed and head else None

    @property
    def gguf_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def gguf_name_for(self, outtype: str | None) -> str:
        return self.gguf_names.get(outtype or "", self.gguf_name)

    def skipped(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.skip)

    def base_name(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name


ARCHS: dict[str, Arch] = {}


def register(*archs: Arch) -> None:
    for a in archs:
        ARCHS[a.name] = a


def _load_tables() -> None:
    # importing the family modules registers their tables
    from . import bert, bitnet, gemma, gpt2, llama, neobert, phi3, qwen  # noqa: F401
    from ..plugins import register_archs

    register_archs(ARCHS)  # other packages' tables, after pyconv's own


def tables() -> dict[str, Arch]:
    """Every registered table by name."""
    _load_tables()
    return ARCHS


def table_for_gguf(name: str) -> Arch | None:
    """The first table that writes GGUF architecture ``name`` (for some out type)."""
    _load_tables()
    return next((a for a in ARCHS.values() if name == a.gguf_name or name in a.gguf_names.values()), None)


def guess_arch(tensor_names: list[str]) -> Arch | None:
    """The family whose signature matches the names, the most specific one (most patterns) first."""
    _load_tables()
    found = [a for a in ARCHS.values()
             if a.signature and all(any(re.search(p, n) for n in tensor_names) for p in a.signature)]
    return max(found, key=lambda a: len(a.signature), default=None)


def detect_arch(config: Mapping[str, Any] | None, tensor_names: list[str], forced: str | None = None, *,
                guess_unknown: bool = False) -> Arch:
    """The table for a checkpoint: ``forced`` (--arch), else config.json's ``architectures`` or
    ``model_type``, else the tensor-name signature (with a warning naming what was assumed). A config
    naming an architecture pyconv does not know is an error unless ``guess_unknown``."""
    _load_tables()
    if forced:
        if forced not in ARCHS:
            raise ConversionError(f"unknown architecture '{forced}' (supported: {', '.join(sorted(ARCHS))})")
        return ARCHS[forced]
    if config:
        for hf in config.get("architectures") or []:
            for a in ARCHS.values():
                if hf in a.hf_architectures:
                    return a
        model_type = config.get("model_type")
        for a in ARCHS.values():
            if model_type in a.model_types:
                return a
        known = config.get("architectures") or [model_type]
        if not guess_unknown:
            raise ConversionError(f"architecture {known} is not supported (supported: {', '.join(sorted(ARCHS))}); "
                                  "pass --arch to force one")
    guessed = guess_arch(tensor_names)
    if guessed is None:
        raise ConversionError(f"neither config.json nor the tensor names tell the architecture (supported: "
                              f"{', '.join(sorted(ARCHS))}); pass --arch")
    why = f"config.json names {known}, which pyconv does not know" if config else "there is no config.json"
    log.warning("%s; the tensor names look like '%s', assumed (pass --arch to choose)", why, guessed.name)
    return guessed
