"""GGUF output for llama.cpp: tensors renamed and re-laid out per architecture table, metadata from
gguf-py's key tables, tokenizer, optional split into llama.cpp's gguf-split shards, and a sha256
fingerprint plus a meta.json beside the file."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from .. import _core, dtypes, gguf_mixes, imatrix
from ..archs.arch import Arch
from ..archs.catalog import Catalog
from ..archs.config import Config
from ..archs.hf_layout import template_pattern
from ..archs.hparams import head_dim
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import BitField, Op, OutFile, OutTensor, Part, Plan, View
from ..sources.base import SourceTensor
from ..sources.checkpoint import Checkpoint
from .gguf_vocab import add_vocab, load_vocab
from .sharding import assign_shards, shard_name

OUTTYPES = dtypes.gguf_outtypes()

log = logging.getLogger("pyconv")
T = gguf.MODEL_TENSOR

# llama.cpp keeps these float32 whatever the file type (its converter and llama-quantize agree; its convolution
# ops read only f32 kernels)
ALWAYS_F32 = {T.FFN_GATE_INP, T.POS_EMBD, T.TOKEN_TYPES, T.SSM_CONV1D, T.SHORTCONV_CONV}
EMBEDDINGS = {T.TOKEN_EMBD, T.OUTPUT}
# the seven projections a BitNet layer ternarizes; nothing else in a ternary file is ternary (docs/i2s.md)
PROJECTIONS = {T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN}
TERNARIZERS = ("absmean",)
# transformers' packed BitNet layers (quantization_config.linear_class): BitLinear divides its output by
# weight_scale, AutoBitLinear multiplies it (transformers/integrations/bitnet.py)
WEIGHT_SCALE_DIVIDES = {"bitlinear": True, "autobitlinear": False}

NUMPY_ARRAY_TYPES = {
    gguf.GGUFValueType.UINT8: np.uint8, gguf.GGUFValueType.INT8: np.int8, gguf.GGUFValueType.UINT16: np.uint16,
    gguf.GGUFValueType.INT16: np.int16, gguf.GGUFValueType.UINT32: np.uint32, gguf.GGUFValueType.INT32: np.int32,
    gguf.GGUFValueType.FLOAT32: np.float32, gguf.GGUFValueType.UINT64: np.uint64, gguf.GGUFValueType.INT64: np.int64,
    gguf.GGUFValueType.FLOAT64: np.float64, gguf.GGUFValueType.BOOL: np.uint8,
}


def check_outtype(outtype: str | None) -> None:
    if outtype is not None and outtype not in OUTTYPES and outtype not in gguf_mixes.FILE_TYPES:
        names = sorted(set(OUTTYPES) | set(gguf_mixes.FILE_TYPES))
        raise ConversionError(f"--outtype {outtype} is not a GGUF type pyconv writes ({', '.join(names)})")


# the options that only llama-quantize's file types take, by flag
MIX_FLAGS = {"--pure": "pure", "--output-tensor-type": "output_tensor_type", "--token-embedding-type": "token_embedding_type",
             "--tensor-type": "tensor_types", "--leave-output-tensor": "leave_output_tensor", "--imatrix": "imatrix"}


@dataclass(frozen=True)
class TypeRules:
    """What decides each tensor's GGUF type: the out type, how projections are ternarized (None: not)
    and the --keep-float patterns; with one of llama-quantize's file types (``mix``), its options.
    A mix types the tensors in a second pass (``apply_mix``), as it looks at all of them: the
    first keeps them float."""

    outtype: str | None
    ternarize: str | None
    keep_float: tuple[str, ...]
    mix: gguf_mixes.FileType | None = None
    choices: gguf_mixes.Choices = gguf_mixes.NO_CHOICES
    importance: imatrix.Imatrix | None = field(default=None, compare=False)

    @classmethod
    def of(cls, opts: ConvertOptions, model: str, model_ternarize: str | None) -> TypeRules:
        """The rules for ``model`` (a table or GGUF architecture name), whose own ternarization is
        ``model_ternarize``."""
        outtype, wanted = opts.common.outtype, opts.quant
        check_outtype(outtype)
        if wanted.ternarize is not None and wanted.ternarize not in TERNARIZERS:
            raise ConversionError(f"--ternarize {wanted.ternarize} is not a ternarization pyconv knows ({', '.join(TERNARIZERS)})")
        for pattern in wanted.keep_float:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConversionError(f"--keep-float {pattern!r} is not a regular expression: {e}") from None
        mix = gguf_mixes.FILE_TYPES.get(outtype or "")
        if mix is None:
            given = [f for f, name in MIX_FLAGS.items() if getattr(wanted, name)]
            if given:
                raise ConversionError(f"{given[0]} needs one of llama-quantize's file types as --outtype "
                                      f"({', '.join(gguf_mixes.FILE_TYPES)})")
            choices = gguf_mixes.NO_CHOICES
        else:
            choices = gguf_mixes.Choices(
                wanted.pure, wanted.output_tensor_type, wanted.token_embedding_type,
                tuple(gguf_mixes.parse_tensor_type(t) for t in wanted.tensor_types), wanted.leave_output_tensor,
                wanted.imatrix is not None)
        ternarize = wanted.ternarize or model_ternarize
        if mix is not None:
            if wanted.ternarize:
                raise ConversionError(f"--ternarize makes ternary types, not --outtype {outtype}")
            loaded = imatrix.load(wanted.imatrix) if wanted.imatrix is not None else None
            return cls(None, None, tuple(wanted.keep_float), mix, choices, loaded)
        if dtypes.is_ternary(outtype) and ternarize is None:
            raise ConversionError(f"--outtype {outtype} stores ternary weights and '{model}' is not a ternary model; "
                                  "pass --ternarize absmean to ternarize its projections")
        return cls(outtype, ternarize, tuple(wanted.keep_float))

    def kept_float(self, *names: str) -> str | None:
        return next((p for p in self.keep_float if any(re.search(p, n) for n in names if n)), None)


def packed(t: SourceTensor) -> str | None:
    """The GGUF block type a pre-quantized weight's codes and scales already are, in another layout."""
    return dtypes.packed_type(t.dtype, t.scale.tensor.dtype, t.scale.block) if t.scale is not None else None


def tensor_type(rules: TypeRules, source_dtype: str, kind: gguf.MODEL_TENSOR, name: str, shape: tuple[int, ...],
                source_name: str = "", packed_as: str | None = None) -> tuple[str, str, list[Op]]:
    """(GGUF type, why, ops) for one tensor, following llama.cpp's rules and BitNet's: only the
    projections become ternary, embeddings and other matrices of a ternary file f16. Pre-quantized
    codes that are a GGUF type (``packed_as``) keep it, unless a float type is asked for."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return "f32", "1-d or norm: f32", []
    if kind in ALWAYS_F32 or not name.endswith(".weight"):
        return "f32", f"{kind.name.lower()}: f32", []
    if not dtypes.is_float(source_dtype) and not dtypes.is_quant(source_dtype):
        raise ConversionError(f"{source_dtype} weights cannot go into GGUF", tensor=name)
    source_float = source_dtype if dtypes.is_float(source_dtype) and source_dtype in OUTTYPES else "f32"
    want = rules.outtype or source_float
    if pattern := rules.kept_float(name, source_name):
        kept = want if dtypes.is_float(want) else "f16"
        return kept, f"kept float by --keep-float {pattern!r}: {kept}", []
    if packed_as is not None and not (rules.outtype and dtypes.is_float(rules.outtype)):
        return packed_as, f"{packed_as} codes and scales repacked as they are", []
    ops: list[Op] = []
    why = ""
    if rules.ternarize and kind in PROJECTIONS:
        # W' rounded to the weights' own type, as the model's forward pass computes it
        ops = [Op("ternarize_absmean", keep_if_ternary=True, round_to=source_float)]
        why = "projection: absmean-ternarized, or packed as it is when already ternary"
    elif dtypes.is_ternary(rules.outtype):
        return "f16", f"{'embedding' if kind in EMBEDDINGS else 'not a projection'} in a ternary file: f16", []
    if dtypes.is_quant(want):
        fitted, reason = gguf_mixes.fitting_type(want, shape[-1])
        if reason:
            return fitted, "; ".join(x for x in (why, reason) if x), ops
    return want, why, ops


def apply_mix(rules: TypeRules, tensors: list[OutTensor], kvs: dict[str, Any]) -> None:
    """The types of a llama-quantize file type, given to the tensors it quantizes (the others, and
    those --keep-float names, stay as the first pass made them). ``kvs``: the file's KVs by key."""
    if rules.mix is None:
        return
    model = gguf_mixes.Model.of_kvs(kvs)
    chosen = gguf_mixes.choose(rules.mix, [(t.name, t.shape) for t in tensors], model, rules.choices)
    for t in tensors:
        if t.name in chosen and not rules.kept_float(t.name, *(s.name for s in t.sources)):
            t.dtype, why = chosen[t.name]
            t.note = " · ".join(x for x in (t.note, why) if x)
            if rules.importance is not None and dtypes.is_quant(t.dtype):
                t.importance = rules.importance.importance(t.name, t.shape)


def imatrix_kvs(rules: TypeRules) -> list[tuple[str, int, Any]]:
    """The quantize.imatrix.* keys llama-quantize records, when an imatrix weighs the rounding."""
    return rules.importance.kvs() if rules.importance is not None else []


def small_values(t: SourceTensor) -> np.ndarray:
    """The values of a small tensor (a scale) as float32, read by Python."""
    if t.nbytes > 1 << 16:
        raise ConversionError(f"{t.nbytes} bytes are too many to read as a scale", tensor=t.name)
    raw = bytearray()
    for seg in t.segments:
        with seg.path.open("rb") as f:
            f.seek(seg.offset)
            raw += f.read(seg.nbytes)
    flat = np.frombuffer(_core.cast(bytes(raw), t.dtype, "f32"), np.float32)
    if t.strides is None:
        return flat[t.offset:t.offset + t.numel].reshape(t.shape)
    values: np.ndarray = np.lib.stride_tricks.as_strided(flat[t.offset:], t.shape, [st * 4 for st in t.strides]).copy()
    return values


def unpacked_parts(packed: SourceTensor, scale: float) -> tuple[tuple[int, ...], list[Part]]:
    """transformers' packed BitNet weight as a [4, out/4, in] layout of parts: bits 2i..2i+1 of
    byte (r, c) hold w[i·out/4 + r, c] + 1 (its ``unpack_weights``), each value times ``scale``."""
    rows, cols = packed.shape
    view = View.of(packed).reshape(1, rows, cols)
    return (4, rows, cols), [Part(view, (i, 0, 0), BitField(2 * i, scale=scale)) for i in range(4)]


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
    unpacked: tuple[tuple[int, ...], list[Part]] | None = None  # or packed ternary codes: (layout, parts)
    joined: list[View] | None = None  # or views concatenated along dim 0


def rope_permuted(view: View, n_head: int) -> tuple[View, tuple[int, ...]]:
    """llama.cpp's Q/K row order: rows viewed as (head, 2, d/2) with the last two swapped."""
    rows = view.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"{rows} rows cannot be split into {n_head} rotary heads", tensor=view.tensor.name)
    permuted = view.reshape(n_head, 2, rows // n_head // 2, *view.shape[1:]).transpose(1, 2)
    return permuted, permuted.shape


def parts_after_heads(view: View, n_head: int, d_head: int) -> tuple[View, tuple[int, ...]]:
    """A fused projection's rows grouped per head, (head, part, d), in the order (part, head, d)."""
    rows = view.shape[0]
    if rows % (n_head * d_head):
        raise ConversionError(f"{rows} rows are not whole groups of {n_head} heads of {d_head}", tensor=view.tensor.name)
    regrouped = view.reshape(n_head, rows // (n_head * d_head), d_head, *view.shape[1:]).transpose(0, 1)
    return regrouped, regrouped.shape


def queries_keys_values(view: View, n_head: int, n_kv: int, d_head: int) -> tuple[tuple[int, ...], list[Part]]:
    """A fused projection's rows grouped per key-value head, (group, n_head/n_kv queries + key + value, d), as
    boxes of llama.cpp's order: every query head, then every key head, then every value head."""
    rows, rest = view.shape[0], view.shape[1:]
    per = n_head // n_kv if n_kv and n_head % n_kv == 0 else 0
    if not per or rows != (n_head + 2 * n_kv) * d_head:
        raise ConversionError(f"{rows} rows are not {n_kv} groups of {n_head} query heads plus a key and a value head "
                              f"of {d_head}", tensor=view.tensor.name)
    grouped = view.reshape(n_kv, per + 2, d_head, *rest)
    zeros = (0,) * (1 + len(rest))
    parts = [Part(grouped.slice(0, g, g + 1).slice(1, 0, per).reshape(per, d_head, *rest), (g * per, *zeros))
             for g in range(n_kv)]
    parts += [Part(grouped.slice(1, per + i, per + i + 1).reshape(n_kv, d_head, *rest), (n_head + i * n_kv, *zeros))
              for i in (0, 1)]
    return (n_head + 2 * n_kv, d_head, *rest), parts


def kv_head_count(arch: Arch, cfg: Config) -> int:
    """The key-value heads the GGUF says the graph has: the table's own hyper-parameter when it has one."""
    hp = next((h for h in arch.gguf.hparams if h.method == "add_head_count_kv"), None)
    n_head = int(cfg.require("num_attention_heads", "n_head"))
    return int(hp.value(cfg) if hp else cfg.find("num_key_value_heads", "n_kv_heads") or n_head)


class GgufMapper:
    """Walks a checkpoint's tensors through an architecture table."""

    def __init__(self, ck: Checkpoint, arch: Arch, cfg: Config) -> None:
        self.ck, self.arch, self.cfg = ck, arch, cfg
        self.layout = arch.gguf
        field = next((f for f in ("num_hidden_layers", "n_layer", "n_layers") if cfg.find(f) is not None), "num_hidden_layers")
        self.n_blocks = int(cfg.require(field))
        # gguf-py's name map holds every block's names: a lying count would be built block by block
        if self.n_blocks > len(ck.tensors):
            raise ConversionError(f"{field} is {self.n_blocks}, more than the {len(ck.tensors)} tensors of the checkpoint "
                                  "could make", file=cfg.file)
        self.names = gguf.get_tensor_name_map(self.layout.arch, self.n_blocks)
        for template, kind in self.layout.extra_names.items():
            for bid in range(self.n_blocks):
                self.names.mapping[template.format(bid=bid)] = (kind, gguf.TENSOR_NAMES[kind].format(bid=bid))
        self.scales = self._packed_scales()
        self.fuse_parts = [[template_pattern(part) for part in fuse.parts] for fuse in self.layout.fuses]

    def _packed_scales(self) -> dict[str, float]:
        """Weights transformers' BitNet quantizer packed (u8, 4 codes a byte, beside a ``weight_scale``),
        each with the factor its codes are multiplied by."""
        quant = self.cfg.get("quantization_config") or {}
        if quant.get("quant_method") != "bitnet":
            return {}
        divides = WEIGHT_SCALE_DIVIDES.get(quant.get("linear_class", "bitlinear"))
        if divides is None:
            raise ConversionError(f"quantization_config.linear_class {quant.get('linear_class')!r} is not one of transformers' "
                                  f"BitNet layers ({', '.join(WEIGHT_SCALE_DIVIDES)})")
        scales = {}
        for hf, t in self.ck.tensors.items():
            if not hf.endswith(".weight_scale"):
                continue
            weight = hf.removesuffix("_scale")
            if weight not in self.ck.tensors or self.ck.tensors[weight].dtype != "u8" or t.numel != 1:
                raise ConversionError("a weight_scale needs a packed u8 weight beside it and one value", tensor=hf)
            ws = np.float32(small_values(t).reshape(-1)[0])
            scales[weight] = float(np.float32(1) / ws if divides else ws)
        return scales

    def _gguf_name(self, hf: str, name: str) -> tuple[gguf.MODEL_TENSOR, str]:
        found = self.names.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if found is None and name.endswith("_bias"):  # a bare bias parameter (ERNIE's e_score_correction_bias)
            found = self.names.get_type_and_name(name.removesuffix("_bias") + ".bias", try_suffixes=(".bias",))
        if found is None:
            raise ConversionError(f"no GGUF tensor for it in llama.cpp's '{self.layout.name}' architecture", tensor=hf)
        kind, gguf_name = found
        if not gguf_name.endswith((".weight", ".bias")):  # a bare nn.Parameter (fused experts) is a weight
            gguf_name += ".weight"
        return kind, gguf_name

    def one_to_one(self, hf: str) -> tuple[gguf.MODEL_TENSOR, str, int | None]:
        """(kind, GGUF name, rotary heads its rows are permuted by or None) of a weight llama.cpp keeps
        as one tensor in HF's own orientation; anything split, fused, stacked, transposed, regrouped or
        dropped is refused, since a low-rank update of it is not a low-rank update of one GGUF tensor."""
        name = self.arch.base_name(hf)
        fixes = self.layout
        reshaped = (self.layout.skipped(name) or self._fuse_part(name) is not None
                    or any(re.match(s.pattern, name) for s in fixes.splits)
                    or bool(fixes.experts and re.match(fixes.experts.pattern, name))
                    or bool(fixes.transposed and hf.endswith(fixes.transposed)))
        if reshaped:
            raise ConversionError(f"llama.cpp's '{fixes.name}' stores this weight split, fused, stacked, transposed or "
                                  "not at all, so a LoRA update of it cannot be carried over", tensor=hf)
        kind, gguf_name = self._gguf_name(hf, name)
        if kind in fixes.head_grouped:
            raise ConversionError("llama.cpp regroups this weight's rows per head, so a LoRA update of it cannot be "
                                  "carried over", tensor=hf)
        rotary = fixes.permute_qk and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K)
        return kind, gguf_name, self.rotary_heads(kind) if rotary else None

    def rotary_heads(self, kind: gguf.MODEL_TENSOR) -> int:
        """The heads whose rows llama.cpp's Q/K permutation reorders: the query heads, or K's own."""
        n_head = int(self.cfg.require("num_attention_heads", "n_head"))
        if kind == gguf.MODEL_TENSOR.ATTN_K:
            n_head = int(self.cfg.find("num_key_value_heads", "n_kv_heads") or n_head)
        return n_head

    def _split(self, hf: str, name: str, t: SourceTensor) -> list[MappedTensor] | None:
        for split in self.layout.splits:
            if m := re.match(split.pattern, name):
                n = len(split.parts)
                rows = t.shape[split.dim]
                if rows % n:
                    raise ConversionError(f"dim {split.dim} of {t.shape} does not split into {n} equal parts", tensor=hf)
                views = View.of(t).split(split.dim, [rows // n] * n)
                return [MappedTensor(gguf.TENSOR_NAMES[kind].format(bid=int(m.group(1))) + ".weight", kind, view, None,
                                     f"{hf} part {i + 1}/{n}") for i, (kind, view) in enumerate(zip(split.parts, views))]
        return None

    def _fuse_part(self, name: str) -> tuple[int, int, str, int] | None:
        """(fuse, layer, .weight or .bias, part) when ``name`` is a part of one of the table's fuses."""
        for f, patterns in enumerate(self.fuse_parts):
            for part, pattern in enumerate(patterns):
                if m := pattern.match(name):
                    return f, int(m["bid"]), m["suffix"], part
        return None

    def tensors(self) -> Iterable[MappedTensor]:
        experts: dict[tuple[int, str], dict[int, SourceTensor]] = {}
        fusing: dict[tuple[int, int, str], dict[int, SourceTensor]] = {}
        stack = self.layout.experts
        n_experts = int(self.cfg.find(*stack.count_fields) or 0) if stack else 0
        for hf, t in self.ck.tensors.items():
            name = self.arch.base_name(hf)
            if self.layout.skipped(name) or (hf.endswith(".weight_scale") and hf.removesuffix("_scale") in self.scales):
                continue
            if hf in self.scales:
                kind, gguf_name = self._gguf_name(hf, name)
                yield MappedTensor(gguf_name, kind, None, None, f"{hf} unpacked", unpacked_parts(t, self.scales[hf]))
                continue
            if (parts := self._split(hf, name, t)) is not None:
                yield from parts
                continue
            if (hit := self._fuse_part(name)) is not None:
                f, bid, suffix, part = hit
                fuse, group = self.layout.fuses[f], fusing.setdefault(hit[:3], {})
                group[part] = t
                if len(group) == len(fuse.parts):
                    yield MappedTensor(gguf.TENSOR_NAMES[fuse.kind].format(bid=bid) + suffix, fuse.kind, None, None,
                                       " ‖ ".join(group[i].name for i in range(len(group))),
                                       joined=[View.of(group[i]) for i in range(len(group))])
                    del fusing[hit[:3]]
                continue
            if stack and (m := re.match(stack.pattern, name)):
                layer, expert, projection = int(m.group(1)), int(m.group(2)), m.group(3)
                members = experts.setdefault((layer, projection), {})
                members[expert] = t
                if len(members) == n_experts:
                    kind = stack.parts[projection]
                    views = [View.of(members[e]) for e in range(n_experts)]
                    yield MappedTensor(gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight", kind, None, views,
                                       f"{n_experts} experts of layer {layer} '{projection}'")
                    del experts[(layer, projection)]
                continue
            kind, gguf_name = self._gguf_name(hf, name)
            yield MappedTensor(gguf_name, kind, View.of(t), None, hf)
        if experts:
            (layer, projection), members = next(iter(experts.items()))
            raise ConversionError(f"layer {layer} '{projection}' has {len(members)} of {n_experts} experts")
        if fusing:
            (f, layer, suffix), found = next(iter(fusing.items()))
            fuse, present = self.layout.fuses[f], next(iter(found.values())).name
            prefix = present[:len(present) - len(self.arch.base_name(present))]
            lacking = next(p for i, p in enumerate(fuse.parts) if i not in found).format(bid=layer) + suffix
            raise ConversionError(f"missing, and llama.cpp's {gguf.TENSOR_NAMES[fuse.kind].format(bid=layer)} needs it "
                                  "fused with the layer's other parts", file=self.ck.path, tensor=prefix + lacking)

    def out_tensor(self, m: MappedTensor, rules: TypeRules) -> OutTensor:
        fixes, cfg = self.layout, self.cfg
        if m.stacked is not None:
            first = m.stacked[0]
            shape = (len(m.stacked), *first.shape)
            parts = [Part(v.reshape(1, *v.shape), (e,) + (0,) * first.ndim) for e, v in enumerate(m.stacked)]
            dtype, why, ops = tensor_type(rules, first.dtype, m.kind, m.name, shape, m.source, packed(first.tensor))
            return OutTensor(m.name, shape, dtype, parts, ops=ops, note=" · ".join(x for x in (m.source, why) if x))
        if m.joined is not None:
            shape = (sum(v.shape[0] for v in m.joined), *m.joined[0].shape[1:])
            dtype, why, ops = tensor_type(rules, m.joined[0].dtype, m.kind, m.name, shape, m.source)
            t = OutTensor.concat(m.name, m.joined, 0, dtype, note=" · ".join(x for x in (m.source, why) if x))
            t.ops += ops
            return t
        if m.unpacked is not None:
            if fixes.permute_qk or fixes.transposed:
                raise ConversionError(f"packed ternary weights of '{self.arch.name}' would need their rows reordered, "
                                      "which pyconv does not do", tensor=m.source)
            layout, parts = m.unpacked
            shape = (layout[0] * layout[1], layout[2])
            # the codes times the scale are exact f32 values
            dtype, why, ops = tensor_type(rules, "f32", m.kind, m.name, shape, m.source)
            return OutTensor(m.name, shape, dtype, parts, layout, ops=ops, note=" · ".join(x for x in (m.source, why) if x))
        assert m.view is not None
        view, layout = m.view, m.view.shape
        hf = m.view.tensor.name
        if fixes.transposed and hf.endswith(fixes.transposed):
            view = view.transpose()
            layout = view.shape
        if m.kind in fixes.squeezed:
            if len(view.shape) != 3 or view.shape[1] != 1:
                raise ConversionError(f"is {list(view.shape)}, not [channels, 1, width]", file=self.ck.path, tensor=hf)
            view = view.reshape(view.shape[0], view.shape[2])
            layout = view.shape
        shape = view.shape
        if fixes.permute_qk and m.kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            view, layout = rope_permuted(view, self.rotary_heads(m.kind))
        if m.kind in fixes.head_grouped:
            view, layout = parts_after_heads(view, int(cfg.require("num_attention_heads", "n_head")), head_dim(cfg))
        parts = [Part(view, (0,) * len(layout))]
        if m.kind in fixes.kv_grouped:
            layout, parts = queries_keys_values(view, int(cfg.require("num_attention_heads", "n_head")),
                                                kv_head_count(self.arch, cfg), head_dim(cfg))
        dtype, why, ops = tensor_type(rules, view.dtype, m.kind, m.name, shape, hf, packed(view.tensor))
        t = OutTensor(m.name, shape, dtype, parts, layout, note=why)
        if fixes.norm_shift and hf.endswith("norm.weight"):
            t.ops.append(Op("add", fixes.norm_shift))
        t.ops += ops
        return t


def file_type(outtype: str | None, tensors: list[OutTensor]) -> int:
    if (mix := gguf_mixes.FILE_TYPES.get(outtype or "")) is not None:
        return mix.number
    if outtype is None:  # the type most 2-d weights ended up with
        counts: dict[str, int] = {}
        for t in tensors:
            if len(t.shape) >= 2:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        outtype = max(counts, key=lambda k: counts[k]) if counts else "f32"
    number = dtypes.file_type(outtype)
    return int(gguf.LlamaFileType.ALL_F32) if number is None else number


def metadata(ck: Checkpoint, arch: Arch, cfg: Config, tensors: list[OutTensor], opts: ConvertOptions) -> gguf.GGUFWriter:
    """All KVs of the (first) file, collected by a gguf-py writer that never writes a file."""
    layout = arch.gguf
    w = gguf.GGUFWriter(None, layout.name_for(opts.common.outtype))
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(opts.gguf.model_name or ck.folder.name)
    for hp in layout.hparams:
        if hp.key and hp.key in w.kv_data[0]:  # another runtime's key that is llama.cpp's own as well
            continue
        value = hp.value(cfg)
        if value is not None:
            getattr(w, hp.method)(*((hp.key,) if hp.key else ()), value)
    for method, value in layout.constants:
        getattr(w, method)(value)
    w.add_file_type(file_type(opts.common.outtype, tensors))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokenizer = Path(opts.source.tokenizer) if opts.source.tokenizer else None
    folder = next((ck.folder / d for d in layout.tokenizer_dirs if (ck.folder / d).is_dir()), ck.folder)
    vocab, vocab_folder = load_vocab(folder, cfg.find("vocab_size"), tokenizer=tokenizer, pre=opts.gguf.tokenizer_pre,
                                     filler=layout.vocab_filler)
    add_vocab(w, vocab, vocab_folder)
    return w


def place(tensors: list[OutTensor], kvs: list[tuple[str, int, Any]], stem: str, opts: ConvertOptions) -> list[OutFile]:
    """One GGUF file, or llama.cpp split shards: all KVs in the first, split.* keys in every one."""
    shard_of = assign_shards([t.nbytes for t in tensors], opts.gguf.split_max_size, opts.gguf.split_max_tensors)
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


def warn_if_graph_differs(arch: Arch, graph: str, activation: str | None, model: str) -> None:
    """One warning when the runtime graph of GGUF architecture ``graph`` applies another FFN activation
    than the model: the file would then compute a different function."""
    activations = arch.gguf.graph_activations
    applies = activations.get(graph)
    if applies and activation and activation != applies:
        fits = [g for g, a in activations.items() if a == activation]
        log.warning("%s uses %s in its FFN but runtimes of GGUF architecture '%s' apply %s, so the file computes "
                    "another function%s", model, activation, graph, applies,
                    f" ({activation} runs as '{fits[0]}')" if fits else "")


def ternary_note(rules: TypeRules, tensors: list[OutTensor]) -> str | None:
    n = sum(1 for t in tensors if any(op.kind == "ternarize_absmean" for op in t.ops))
    if not n:
        return None
    return (f"ternarize: {rules.ternarize} on {n} projections, each packed as it is if already ternary "
            "(one magnitude); the engine reports which")


def ternary_decision(report: dict[str, Any]) -> str:
    if report["already_ternary"]:
        return "already ternary: packed as it is"
    return "absmean-ternarized" if report["ternarized"] else "signs kept at the tensor's absmax"


def plan_gguf(ck: Checkpoint, out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
    """The GGUF of a checkpoint under HF names, through its family's table."""
    check_outtype(opts.common.outtype)
    if ck.config is None:
        raise ConversionError("GGUF needs the model's config.json next to the weights", file=ck.folder)
    cfg = Config(ck.config, ck.folder)
    arch = catalog.detect(cfg, list(ck.tensors), opts.source.arch)
    # any checkpoint transformers' BitNet quantizer made is a ternary model
    packed = (cfg.get("quantization_config") or {}).get("quant_method") == "bitnet"
    rules = TypeRules.of(opts, arch.name, arch.gguf.ternarize or ("absmean" if packed else None))
    graph = arch.gguf.name_for(opts.common.outtype)
    for need in arch.gguf.requires:
        if (value := cfg.find(need.field)) != need.value:
            raise ConversionError(f"llama.cpp's '{graph}' graph cannot compute this model: {need.field} is {value!r}, and "
                                  f"{need.why}", file=ck.path)
    warn_if_graph_differs(arch, graph, cfg.find("hidden_act"), f"this {arch.name} model")
    mapper = GgufMapper(ck, arch, cfg)
    tensors = [mapper.out_tensor(m, rules) for m in mapper.tensors()]
    seen: dict[str, str] = {}
    for t in tensors:
        if t.name in seen:
            raise ConversionError(f"two tensors map to GGUF name '{t.name}'", tensor=t.name)
        seen[t.name] = t.name
    writer = metadata(ck, arch, cfg, tensors, opts)
    apply_mix(rules, tensors, {k: v.value for k, v in writer.kv_data[0].items()})
    files = place(tensors, kv_tuples(writer.kv_data[0]) + imatrix_kvs(rules), out.stem if out.suffix == ".gguf" else out.name, opts)
    plan = Plan(files, tensors, architecture=arch.name)
    plan.late_files = [f"{f.name}.sha256" for f in files] + [f"{out.stem}.meta.json"]
    plan.notes.append(f"architecture {arch.name} → GGUF '{graph}'")
    if note := ternary_note(rules, tensors):
        plan.notes.append(note)
    return plan


def finish_gguf(plan: Plan, written: list[Path], ck: Checkpoint, opts: ConvertOptions,
                source_hashes: dict[Path, str], output_hashes: dict[Path, str]) -> dict[str, bytes]:
    """``<file>.sha256`` for every GGUF file and ``<stem>.meta.json`` describing the conversion."""
    import datetime
    import json

    from ..version import __version__

    side: dict[str, bytes] = {}
    outputs = []
    for f, path in zip(plan.files, written):
        digest = output_hashes[path]
        side[f"{f.name}.sha256"] = f"sha256-{digest}\n".encode()
        outputs.append({"file": f.name, "bytes": path.stat().st_size, "sha256": digest})
    types: dict[str, int] = {}
    for t in plan.tensors:
        types[t.dtype] = types.get(t.dtype, 0) + 1
    options = {k: v for k, v in opts.flat().items() if v is not None and k not in ("progress", "dry_run", "force")}
    meta = {
        "pyconv_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": options,
        "architecture": plan.architecture,
        # the inputs' sha256 only with --hash-inputs: null, and inputs_hashed false, otherwise
        "inputs_hashed": bool(source_hashes),
        "sources": [{"file": str(p), "bytes": p.stat().st_size, "sha256": source_hashes.get(p)} for p in ck.files],
        "outputs": outputs,
        "tensor_types": dict(sorted(types.items())),
    }
    if plan.reports:
        meta["ternary"] = {r["name"]: {"decision": ternary_decision(r), "scale": r["scale"], "mean_abs": r["mean_abs"]}
                           for r in plan.reports}
    late_meta = next(n for n in plan.late_files if n.endswith(".meta.json"))
    side[late_meta] = (json.dumps(meta, indent=2) + "\n").encode()
    return side
