"""Phi-3: llama.cpp's ``phi3`` graph takes the fused projections as HF stores them, ``qkv_proj`` rows
(q, k, v) as ``attn_qkv`` and ``gate_up_proj`` rows (gate, up) as ``ffn_up``, and rotates halves."""

from __future__ import annotations

import gguf

from ..errors import ConversionError
from .base import COMMON_HPARAMS, Arch, Config, HParam, register


def rotary_dims(cfg: Config) -> int:
    if cfg.rope.get("long_factor") or cfg.rope.get("short_factor"):
        # llama.cpp reads these as rope_factors_* tensors that no checkpoint tensor holds
        raise ConversionError("Phi-3 long-context rope factors (rope_scaling long_factor/short_factor) are not "
                              "supported for GGUF")
    n_embd, n_head = int(cfg.require("hidden_size")), int(cfg.require("num_attention_heads"))
    return int(float(cfg.find("partial_rotary_factor") or 1.0) * n_embd) // n_head


PHI3 = Arch(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    model_types=("phi3",),
    gguf_arch=gguf.MODEL_ARCH.PHI3,
    hparams=(
        *COMMON_HPARAMS,
        HParam("add_rope_dimension_count", derive=rotary_dims),
        HParam("add_rope_scaling_orig_ctx_len", ("original_max_position_embeddings",), required=False),
        HParam("add_sliding_window", ("sliding_window",), required=False),
    ),
)

register(PHI3)
