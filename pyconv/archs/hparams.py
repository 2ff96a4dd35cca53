"""GGUF hyper-parameters as gguf-py ``GGUFWriter.add_*`` methods fed from config fields, so keys and
value types come from gguf-py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
