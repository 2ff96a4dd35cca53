"""GGUF hyper-parameters as gguf-py ``GGUFWriter.add_*`` methods fed from config fields, so keys and
value types come from gguf-py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gguf

from ..errors import ConversionError
from .config import Config


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
    # how a GGUF → HF config gets a derived value back: the config fields it gives, from the GGUF value and the
    # config read so far; a value from ``fields`` goes back to the first field as it is
    back: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None

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


def rotary_dims(cfg: Config) -> int:
    """The dimensions of each head that rotate, when only a share of them does (``partial_rotary_factor``,
    GPT-NeoX's ``rotary_pct``)."""
    return int(head_dim(cfg) * float(cfg.find("partial_rotary_factor", "rotary_pct") or 1.0))


# the rotated share of each head, written as the rotated width and read back as the share
PARTIAL_ROTARY = HParam("add_rope_dimension_count", derive=rotary_dims,
                        back=lambda dims, config: {"partial_rotary_factor": dims / head_dim(Config(config))})


# rope_parameters' rope_type → llama.cpp's rope scaling, for the types whose settings llama.cpp reads from keys
# (llama3 needs a rope_freqs tensor, which no checkpoint tensor holds)
ROPE_SCALINGS = {"linear": gguf.RopeScalingType.LINEAR, "yarn": gguf.RopeScalingType.YARN}


def rope_scaling(cfg: Config) -> gguf.RopeScalingType | None:
    kind = cfg.rope.get("rope_type") or cfg.rope.get("type")
    if kind in (None, "default"):
        return None
    if kind not in ROPE_SCALINGS:
        raise ConversionError(f"rope_type {kind!r} is not one pyconv writes for GGUF ({', '.join(ROPE_SCALINGS)})",
                              file=cfg.file)
    return ROPE_SCALINGS[kind]


def rope_factor(cfg: Config) -> float | None:
    return float(cfg.rope["factor"]) if rope_scaling(cfg) is not None and "factor" in cfg.rope else None


def yarn_only(key: str) -> Callable[[Config], Any]:
    return lambda cfg: cfg.rope.get(key) if rope_scaling(cfg) == gguf.RopeScalingType.YARN else None


def into_rope(key: str, **also: Any) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """A ``back`` that puts the value into config.json's ``rope_parameters`` as ``key`` (with ``also``)."""
    return lambda value, config: {"rope_parameters": {**(config.get("rope_parameters") or {}), key: value, **also}}


def yarn(method: str, key: str, **also: Any) -> HParam:
    """A YaRN setting of ``rope_parameters``, written by GGUFWriter ``method`` and read back."""
    return HParam(method, derive=yarn_only(key), required=False, back=into_rope(key, **also))


# linear and YaRN rope scaling as llama.cpp's converter writes them
ROPE_SCALING_HPARAMS = (
    HParam("add_rope_scaling_type", derive=rope_scaling, required=False, back=into_rope("rope_type")),
    HParam("add_rope_scaling_factor", derive=rope_factor, required=False, back=into_rope("factor")),
    yarn("add_rope_scaling_orig_ctx_len", "original_max_position_embeddings"),
    yarn("add_rope_scaling_yarn_ext_factor", "extrapolation_factor"),
    yarn("add_rope_scaling_yarn_attn_factor", "attention_factor"),
    yarn("add_rope_scaling_yarn_beta_fast", "beta_fast"),
    yarn("add_rope_scaling_yarn_beta_slow", "beta_slow"),
)


def sliding_pattern(cfg: Config) -> list[bool] | None:
    """Which layers attend within the sliding window, from ``layer_types`` (transformers 5)."""
    types = cfg.get("layer_types")
    return [t == "sliding_attention" for t in types] if isinstance(types, list) else None


SLIDING_PATTERN = HParam("add_sliding_window_pattern", derive=sliding_pattern, required=False,
                         back=lambda swa, _config: {"layer_types": ["sliding_attention" if s else "full_attention" for s in swa]})
