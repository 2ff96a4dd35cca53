"""llama-quantize's file types ("mixes"): the block type each GGUF tensor of a Q4_K_M, Q5_K_S, ...
file gets, and why.

A file type names a default block type and rules that give some tensors more (or fewer) bits: the
value projection and ffn_down in the layers that matter most, the output matrix (and a tied token
embedding), experts and grouped-query attention. Rows that do not fit a type's blocks fall back to
a smaller block. The choices are the ones llama-quantize makes at the llama.cpp commit pyconv tests
against, including the order it walks the tensors in (by layer, then by name), which its counters
of attn_v and ffn_down tensors depend on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gguf

from . import dtypes
from .errors import ConversionError


@dataclass(frozen=True)
class FileType:
    """One of llama-quantize's file types: its ``general.file_type`` number and default block type.
    ``pure`` ones (pyconv's q3_k, q4_k, q5_k) give every tensor the default type, as ``--pure`` does."""

    name: str
    number: int
    default: str
    pure: bool = False


FILE_TYPES: dict[str, FileType] = {ft.name: ft for ft in (
    FileType("q4_0", 2, "q4_0"), FileType("q4_1", 3, "q4_1"), FileType("q5_0", 8, "q5_0"), FileType("q5_1", 9, "q5_1"),
    FileType("q2_k", 10, "q2_k"), FileType("q2_k_s", 21, "q2_k"),
    FileType("q3_k_s", 11, "q3_k"), FileType("q3_k_m", 12, "q3_k"), FileType("q3_k_l", 13, "q3_k"),
    FileType("q4_k_s", 14, "q4_k"), FileType("q4_k_m", 15, "q4_k"),
    FileType("q5_k_s", 16, "q5_k"), FileType("q5_k_m", 17, "q5_k"),
    FileType("q6_k", 18, "q6_k"), FileType("iq4_nl", 25, "iq4_nl"), FileType("iq4_xs", 30, "iq4_xs"),
    FileType("q3_k", 12, "q3_k", pure=True), FileType("q4_k", 15, "q4_k", pure=True), FileType("q5_k", 17, "q5_k", pure=True),
)}

# names llama-quantize never quantizes (besides norms, 1-d tensors and non-weights): small or index tables
NEVER_QUANTIZED = ("ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
                   "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
                   "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                   "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
                   "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
                   "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
                   "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
                   ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")
NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")

# broad roles, found by substring in this order (a fused qkv is "attn_v"-like: it holds the values)
ROLES = (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
         ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
         ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"))
TOKEN_EMBEDDINGS = ("token_embd.weight", "per_layer_token_embd.weight")

# the architectures whose 80-layer models llama.cpp calls 70B (llama only with grouped-query attention)
SEVENTY_B = {"llama": True, "qwen2": False}


def role(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in TOKEN_EMBEDDINGS:
        return "token_embd"
    return next((r for needle, r in ROLES if needle in name), "other")


def quantizable(name: str, ndim: int, leave_output: bool) -> bool:
    """Whether llama-quantize re-types this tensor at all (the others keep their type)."""
    return (ndim >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and not (leave_output and name == "output.weight")
            and not any(n in name for n in NEVER_QUANTIZED) and name not in NEVER_QUANTIZED_NAMES)


def use_more_bits(i: int, n: int) -> bool:
    """The layers llama.cpp gives more bits: the first and last eighth and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class Model:
    """What of the model the rules look at."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int

    @classmethod
    def of_kvs(cls, kvs: Mapping[str, Any]) -> Model:
        """From a GGUF file's KVs (name → value)."""
        arch = str(kvs.get("general.architecture", ""))

        def number(key: str, default: int) -> int:
            value = kvs.get(f"{arch}.{key}", default)
            if isinstance(value, (list, tuple)):  # per-layer counts: the rules read layer 0's
                value = value[0] if value else default
            return int(value)

        n_head = number("attention.head_count", 0)
        return cls(arch, number("block_count", 0), n_head, number("attention.head_count_kv", n_head), number("expert_count", 0))

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        needs_gqa = SEVENTY_B.get(self.arch)
        return needs_gqa is not None and self.n_layer == 80 and (not needs_gqa or self.n_head != self.n_head_kv)


@dataclass(frozen=True)
class Position:
    """Where a tensor stands: its layer (or llama.cpp's running count) of ``n``, and the model."""

    i: int
    n: int
    model: Model
    imatrix: bool


@dataclass(frozen=True)
class Rule:
    file_types: frozenset[str]
    when: Callable[[Position], bool]
    type: str
    why: str


def rule(file_types: str, type_: str, why: str, when: Callable[[Position], bool] = lambda p: True) -> Rule:
    return Rule(frozenset(file_types.split()), when, type_, why)


def gqa4(p: Position) -> bool:
    return p.model.n_gqa >= 4


def first_eighth(p: Position) -> bool:
    return p.i < p.n // 8


def more_bits(p: Position) -> bool:
    return use_more_bits(p.i, p.n)


def eight_experts(p: Position) -> bool:
    return p.model.n_expert == 8


# per role, the first rule whose file type and condition hold sets the type
RULES: dict[str, tuple[Rule, ...]] = {
    "attn_v": (
        rule("q2_k", "q4_k", "grouped-query attention (≥4 heads a group)", gqa4),
        rule("q2_k", "q3_k", "value projection"),
        rule("q2_k_s", "q4_k", "grouped-query attention (≥4 heads a group)", gqa4),
        rule("q3_k_m", "q5_k", "one of the first two value projections", lambda p: p.i < 2),
        rule("q3_k_m", "q4_k", "value projection"),
        rule("q3_k_l", "q5_k", "value projection"),
        rule("iq4_nl iq4_xs", "q5_k", "grouped-query attention (≥4 heads a group)", gqa4),
        rule("q4_k_m q5_k_m", "q6_k", "value projection of a layer that gets more bits", more_bits),
        rule("q4_k_s", "q5_k", "one of the first four value projections", lambda p: p.i < 4),
    ),
    "attn_k": (rule(" ".join(FILE_TYPES), "q8_0", "8 experts: the key projection is small", eight_experts),),
    "ffn_down": (
        rule("q2_k", "q3_k", "ffn_down"),
        rule("q2_k_s", "q4_k", "ffn_down of the first eighth of the layers", first_eighth),
        rule("q3_k_m", "q5_k", "ffn_down of the first sixteenth of the layers", lambda p: p.i < p.n // 16),
        rule("q3_k_m", "q4_k", "ffn_down"),
        rule("q3_k_l", "q5_k", "ffn_down"),
        rule("q4_k_m q5_k_m", "q6_k", "ffn_down of a layer that gets more bits", more_bits),
        rule("iq4_nl iq4_xs", "q5_k", "ffn_down of the first eighth of the layers, no imatrix",
             lambda p: first_eighth(p) and not p.imatrix),
        rule("q4_k_s", "q5_k", "ffn_down of the first eighth of the layers", first_eighth),
        rule("q4_0", "q4_1", "ffn_down of the first eighth of the layers, with an imatrix", lambda p: p.imatrix and first_eighth(p)),
        rule("q5_0", "q5_1", "ffn_down of the first eighth of the layers, with an imatrix", lambda p: p.imatrix and first_eighth(p)),
    ),
    "attn_output": (
        rule("q2_k q3_k_s q3_k_m iq4_nl q4_k_s q4_k_m iq4_xs", "q5_k", "attention output of an 8-expert model", eight_experts),
        rule("q2_k", "q3_k", "attention output", lambda p: not eight_experts(p)),
        rule("q3_k_m", "q4_k", "attention output", lambda p: not eight_experts(p)),
        rule("q3_k_l", "q5_k", "attention output", lambda p: not eight_experts(p)),
    ),
}


def parse_tensor_type(text: str) -> tuple[str, str]:
    """``PATTERN=TYPE`` as llama-quantize reads it: the pattern lower-cased, the type a GGUF type name."""
    pattern, sep, type_ = text.partition("=")
    if not sep or not pattern or not type_:
        raise ConversionError(f"--tensor-type {text!r} is not PATTERN=TYPE")
    return pattern.lower(), type_.lower()


@dataclass(frozen=True)
class Choices:
    """llama-quantize's options that change the types: ``--pure``, ``--output-tensor-type``,
    ``--token-embedding-type``, ``--tensor-type`` (pattern, type; the first match wins),
    ``--leave-output-tensor`` and whether an imatrix is given."""

    pure: bool = False
    output_type: str | None = None
    token_embedding_type: str | None = None
    tensor_types: tuple[tuple[str, str], ...] = ()
    leave_output: bool = False
    imatrix: bool = False
    patterns: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = []
        for pattern, type_ in self.tensor_types:
            try:
                compiled.append((re.compile(pattern), type_))
            except re.error as e:
                raise ConversionError(f"--tensor-type {pattern!r} is not a regular expression: {e}") from None
        object.__setattr__(self, "patterns", tuple(compiled))
        named = [("--output-tensor-type", self.output_type), ("--token-embedding-type", self.token_embedding_type),
                 *(("--tensor-type", t) for _, t in self.tensor_types)]
        for flag, wanted in named:
            if wanted is not None:
                check_type(flag, wanted)


NO_CHOICES = Choices()


def check_type(flag: str, type_: str) -> None:
    """A type a user names must be one llama.cpp has (gguf-py's list is its) and pyconv writes."""
    writes = type_ in dtypes.TYPES and (dtypes.is_float(type_) or dtypes.row(type_).can_quantize)
    if not writes or type_.upper() not in gguf.GGMLQuantizationType.__members__:
        raise ConversionError(f"{flag} {type_}: not a llama.cpp type pyconv writes")


def llama_order(names: Sequence[str]) -> list[int]:
    """Indices of ``names`` in llama.cpp's order: by block number (others first), then by name."""
    def key(i: int) -> tuple[int, str]:
        m = re.match(r"blk\.(\d+)\.", names[i])
        return (int(m.group(1)) if m else -1, names[i])
    return sorted(range(len(names)), key=key)


def fitting_type(want: str, n_cols: int) -> tuple[str, str]:
    """(type, why) for rows of ``n_cols`` that should be ``want``: ``want`` itself (why "") when they
    fit its blocks, else llama.cpp's fallback for it (the type table's), or F16 when that does not
    fit either."""
    if n_cols % dtypes.row_elems(want) == 0:
        return want, ""
    smaller = dtypes.fallback(want)
    if smaller is None or n_cols % dtypes.row_elems(smaller):
        smaller = "f16"
    return smaller, f"rows of {n_cols} do not fit {want} blocks: {smaller}"


@dataclass
class Counters:
    """llama-quantize's running counts of the value projections and ffn_down tensors it has typed."""

    n_attn_v: int
    n_layer: int
    attn_v: int = 0
    ffn_down: int = 0


def choose(file_type: FileType, tensors: Sequence[tuple[str, tuple[int, ...]]], model: Model, choices: Choices
           ) -> dict[str, tuple[str, str]]:
    """(type, why) of each quantizable tensor (name, shape as pyconv writes it, rows last), in a
    ``file_type`` file of ``model``. A tensor llama.cpp cannot make without an imatrix, when there
    is none, is an error naming it."""
    names = [n for n, _ in tensors]
    shapes = dict(tensors)
    counters = Counters(sum(1 for n in names if role(n) == "attn_v"), model.n_layer)
    tied = "output.weight" not in shapes
    out: dict[str, tuple[str, str]] = {}
    for i in llama_order(names):
        name = names[i]
        if not quantizable(name, len(shapes[name]), choices.leave_output):
            continue
        type_, why = one(file_type, name, shapes[name][-1], model, choices, counters, tied)
        if type_ == "q2_k" and file_type.name == "q2_k_s" and role(name) not in ("output", "token_embd") and not choices.imatrix:
            raise ConversionError("--outtype q2_k_s needs an importance matrix (--imatrix), as llama.cpp's does",
                                  tensor=name)
        out[name] = (type_, f"{file_type.name}: {why}")
    return out


def one(ft: FileType, name: str, cols: int, model: Model, choices: Choices, counters: Counters, tied: bool) -> tuple[str, str]:
    r = role(name)
    if choices.token_embedding_type and r == "token_embd":
        return choices.token_embedding_type, f"--token-embedding-type {choices.token_embedding_type}"
    if choices.output_type and r == "output":
        return choices.output_type, f"--output-tensor-type {choices.output_type}"
    type_, why = ft.default, f"default {ft.default}"
    pattern = next(((p, t) for p, t in choices.patterns if p.search(name)), None)
    if pattern:
        type_, why = pattern[1], f"--tensor-type {pattern[0].pattern}={pattern[1]}"
    elif not (choices.pure or ft.pure):
        type_, why = by_rules(ft, name, r, cols, model, choices, counters, tied, type_, why)
    smaller, fell = fitting_type(type_, cols)
    return smaller, f"{why}; {fell}" if fell else why


def by_rules(ft: FileType, name: str, r: str, cols: int, model: Model, choices: Choices, counters: Counters, tied: bool,
             type_: str, why: str) -> tuple[str, str]:
    """llama.cpp's per-role rules of the file type."""
    if r == "output" or (tied and r == "token_embd"):
        what = "output" if r == "output" else "token embedding tied to the output"
        if choices.output_type:
            return choices.output_type, f"{what}: --output-tensor-type {choices.output_type}"
        if cols % dtypes.block_elems(type_):
            return "q8_0", f"{what} whose rows of {cols} do not fit {type_}: q8_0"
        return ("q6_k", f"{what}: q6_k") if type_ != "q8_0" else (type_, why)
    if r == "token_embd":
        return type_, why
    if r in ("attn_v", "ffn_down"):
        if r == "attn_v":
            at = Position(counters.attn_v, counters.n_attn_v, model, choices.imatrix)
            counters.attn_v += 1
        else:
            at = Position(*layer_of(name, counters.ffn_down, counters.n_layer, model), model, choices.imatrix)
            counters.ffn_down += 1
    else:
        at = Position(0, 0, model, choices.imatrix)
    hit = next((x for x in RULES.get(r, ()) if ft.name in x.file_types and x.when(at)), None)
    if hit:
        type_, why = hit.type, f"{hit.why}: {hit.type}"
    if r == "attn_v":
        if model.is_70b and type_ in ("q3_k", "q4_k"):
            type_, why = "q5_k", "value projection of a 70B model (8 heads share it): q5_k"
        if model.n_expert == 8:
            type_, why = "q8_0", "value projection of an 8-expert model: q8_0"
    return type_, why


def layer_of(name: str, count: int, n_layer: int, model: Model) -> tuple[int, int]:
    """(layer, layers) of an ffn_down tensor: llama.cpp's running count, or with experts (which need
    not be consecutive) the block number in its name."""
    if max(1, model.n_expert) == 1:
        return count, n_layer
    m = re.match(r"blk\.(\d+)\.", name)
    if not m or not 0 <= int(m.group(1)) < n_layer:
        raise ConversionError(f"cannot tell the layer of {name} among {n_layer}", tensor=name)
    return int(m.group(1)), n_layer
