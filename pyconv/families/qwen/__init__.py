"""Qwen (v1, remote code: HF side only), Qwen2 (biased q/k/v projections) and Qwen3 (RMS-normed q and k per head): llama.cpp's ``qwen2`` and
``qwen3`` graphs rotate halves (NeoX style), the order HF checkpoints hold, so Q/K rows stay as they are."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.llama_like import (
                  BLOCK,
                  LLAMA_HF_NAMES,
                  LLAMA_SIGNATURE,
                  SKIP_ROTARY,
                  T,
                  llama_like,
)
from ...archs.native_layout import NativeLayout, regroup
from ...archs.proof import (
                  BACK_TO_HF_TESTS,
                  LOGITS_TESTS,
                  SAME_AS_SOURCE_AND_LOADER,
                  Proof,
)
from ...family import Family

QWEN3_HF_NAMES = {**LLAMA_HF_NAMES, T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_norm"),
                  T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_norm")}

# Qwen (v1, trust_remote_code): fused c_attn Linear rows (q, k, v); its MLP multiplies w1(x) by silu(w2(x)),
# so w2 is the gate
QWEN_BLOCK = "transformer.h.{bid}"
QWEN_FUSED = (
    regroup((f"{QWEN_BLOCK}.attn.c_attn",), (f"{QWEN_BLOCK}.attn.q_proj", f"{QWEN_BLOCK}.attn.kv_proj"),
            hf_units=(("one", "one", "one"),), fused_units=(("one",), ("one", "one"))),
    regroup((f"{QWEN_BLOCK}.mlp.w2", f"{QWEN_BLOCK}.mlp.w1"), (f"{QWEN_BLOCK}.mlp.gate_up_proj",),
            fused_units=(("one", "one"),)),
    regroup((f"{QWEN_BLOCK}.attn.c_proj",), (f"{QWEN_BLOCK}.attn.o_proj",)),
    regroup((f"{QWEN_BLOCK}.mlp.c_proj",), (f"{QWEN_BLOCK}.mlp.down_proj",)),
)
QWEN_HF_NAMES = {
    T.TOKEN_EMBD: HfName("transformer.wte"), T.OUTPUT_NORM: HfName("transformer.ln_f"), T.OUTPUT: HfName("lm_head"),
    T.ATTN_NORM: HfName(f"{QWEN_BLOCK}.ln_1"), T.ATTN_QKV: HfName(f"{QWEN_BLOCK}.attn.c_attn"),
    T.ATTN_OUT: HfName(f"{QWEN_BLOCK}.attn.c_proj"), T.FFN_NORM: HfName(f"{QWEN_BLOCK}.ln_2"),
    T.FFN_UP: HfName(f"{QWEN_BLOCK}.mlp.w1"), T.FFN_GATE: HfName(f"{QWEN_BLOCK}.mlp.w2"),
    T.FFN_DOWN: HfName(f"{QWEN_BLOCK}.mlp.c_proj"),
}

QWEN = Arch(
    name="qwen",
    hf_architectures=("QWenLMHeadModel",),
    model_types=("qwen",),
    gguf=GgufLayout(gguf.MODEL_ARCH.QWEN),
    hf=HfLayout(QWEN_HF_NAMES, buffers=SKIP_ROTARY),
    native=NativeLayout(QWEN_FUSED),
    signature=(r"^transformer\.h\.\d+\.attn\.c_attn\.weight$", r"^transformer\.h\.\d+\.mlp\.w2\.weight$"),
)

QWEN2 = llama_like("qwen2", "Qwen2ForCausalLM", GgufLayout(gguf.MODEL_ARCH.QWEN2),
                   signature=(*LLAMA_SIGNATURE, r"\.self_attn\.k_proj\.bias$"),
                   proof=Proof(("f32", "f16"), to_hf=SAME_AS_SOURCE_AND_LOADER, tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)))

QWEN3 = llama_like("qwen3", "Qwen3ForCausalLM", GgufLayout(gguf.MODEL_ARCH.QWEN3),
                   hf=HfLayout(QWEN3_HF_NAMES, buffers=SKIP_ROTARY),
                   signature=(*LLAMA_SIGNATURE, r"\.self_attn\.k_norm\.weight$"),
                   proof=Proof(("f32",), tests=(LOGITS_TESTS,)))

FAMILY = Family("qwen", (QWEN, QWEN2, QWEN3))
