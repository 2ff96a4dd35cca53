"""Phi-3: llama.cpp's ``phi3`` graph takes the fused projections as HF stores them, ``qkv_proj`` rows
(q, k, v) as ``attn_qkv`` and ``gate_up_proj`` rows (gate, up) as ``ffn_up``, and rotates halves."""

from __future__ import annotations

import gguf

from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, SKIP_ROTARY, T, llama_like
from ...archs.native_layout import NativeLayout, regroup
from ...archs.proof import (
    BACK_TO_HF_TESTS,
    LOGITS_TESTS,
    SAME_AS_SOURCE_AND_LOADER,
    Proof,
)
from ...errors import ConversionError
from ...family import Family

PHI3_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.FFN_GATE, T.FFN_UP)},
    T.ATTN_QKV: HfName(f"{BLOCK}.self_attn.qkv_proj"), T.FFN_UP: HfName(f"{BLOCK}.mlp.gate_up_proj"),
}
# the fused layout names Llama's: q_proj and kv_proj cut from qkv_proj (by heads), gate_up_proj kept
PHI3_FUSED = (regroup((f"{BLOCK}.self_attn.qkv_proj",), (f"{BLOCK}.self_attn.q_proj", f"{BLOCK}.self_attn.kv_proj"),
                      hf_units=(("heads", "kv_heads", "kv_heads"),), fused_units=(("heads",), ("kv_heads", "kv_heads"))),)


def rotary_dims(cfg: Config) -> int:
    if cfg.rope.get("long_factor") or cfg.rope.get("short_factor"):
        # llama.cpp reads these as rope_factors_* tensors that no checkpoint tensor holds
        raise ConversionError("Phi-3 long-context rope factors (rope_scaling long_factor/short_factor) are not "
                              "supported for GGUF")
    n_embd, n_head = int(cfg.require("hidden_size")), int(cfg.require("num_attention_heads"))
    return int(float(cfg.find("partial_rotary_factor") or 1.0) * n_embd) // n_head


PHI3 = llama_like(
    "phi3", "Phi3ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.PHI3, hparams=(
        *COMMON_HPARAMS,
        HParam("add_rope_dimension_count", derive=rotary_dims),
        HParam("add_rope_scaling_orig_ctx_len", ("original_max_position_embeddings",), required=False),
        HParam("add_sliding_window", ("sliding_window",), required=False),
    )),
    hf=HfLayout(PHI3_HF_NAMES, buffers=SKIP_ROTARY),
    native=NativeLayout(PHI3_FUSED),
    signature=(r"^model\.layers\.\d+\.self_attn\.qkv_proj\.weight$", r"^model\.layers\.\d+\.mlp\.gate_up_proj\.weight$"),
    proof=Proof(("f32", "f16"), to_hf=SAME_AS_SOURCE_AND_LOADER, tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)),
)

FAMILY = Family("phi3", (PHI3,))
