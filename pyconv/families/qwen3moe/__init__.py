"""Qwen3-MoE: Qwen3's attention (q and k RMS-normed per head, halves rotated as HF holds them) with routed
experts and no shared one. llama.cpp's ``qwen3moe`` graph renormalises the top-k routing weights, as
``norm_topk_prob=True`` says."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout, Requires
from ...archs.hf_layout import HfLayout, HfName
from ...archs.llama_like import BLOCK, SKIP_ROTARY, T, llama_like
from ...archs.moe_like import EXPERT_WIDTH, EXPERTS_SPLIT, EXPERTS_STACK, MOE_HF_NAMES, MOE_HPARAMS, MOE_SIGNATURE
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

QWEN3MOE = llama_like(
    "qwen3_moe", "Qwen3MoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.QWEN3MOE, (*MOE_HPARAMS, EXPERT_WIDTH), experts=EXPERTS_STACK, splits=(EXPERTS_SPLIT,),
               skip=SKIP_ROTARY,
               requires=(Requires("norm_topk_prob", True, "llama.cpp's qwen3moe graph renormalises the top-k weights"),
                         Requires("decoder_sparse_step", 1, "every layer of llama.cpp's qwen3moe graph has experts"))),
    hf=HfLayout({**MOE_HF_NAMES, T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_norm"),
                 T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_norm")}, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=(*MOE_SIGNATURE, r"\.self_attn\.k_norm\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("qwen3moe", (QWEN3MOE,))
