"""Qwen2-MoE: Qwen2's attention (biased q/k/v, halves rotated as HF holds them) with routed experts plus one
shared expert per layer whose output a sigmoid gate (``shared_expert_gate``, one row) scales. llama.cpp's
``qwen2moe`` graph does not renormalise the top-k routing weights, as ``norm_topk_prob=False`` says."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout, Requires
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import HParam
from ...archs.llama_like import BLOCK, SKIP_ROTARY, T, llama_like
from ...archs.moe_like import EXPERT_WIDTH, EXPERTS_SPLIT, EXPERTS_STACK, MOE_HF_NAMES, MOE_HPARAMS, MOE_SIGNATURE
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

SHARED = f"{BLOCK}.mlp.shared_expert"

QWEN2MOE = llama_like(
    "qwen2_moe", "Qwen2MoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.QWEN2MOE,
               (*MOE_HPARAMS, EXPERT_WIDTH,
                HParam("add_expert_shared_feed_forward_length", ("shared_expert_intermediate_size",))),
               experts=EXPERTS_STACK, splits=(EXPERTS_SPLIT,), skip=SKIP_ROTARY,
               requires=(Requires("norm_topk_prob", False, "llama.cpp's qwen2moe graph keeps the top-k weights as "
                                                          "the softmax gives them"),
                         Requires("decoder_sparse_step", 1, "every layer of llama.cpp's qwen2moe graph has experts"))),
    hf=HfLayout({
        **MOE_HF_NAMES,
        T.FFN_GATE_SHEXP: HfName(f"{SHARED}.gate_proj"), T.FFN_UP_SHEXP: HfName(f"{SHARED}.up_proj"),
        T.FFN_DOWN_SHEXP: HfName(f"{SHARED}.down_proj"), T.FFN_GATE_INP_SHEXP: HfName(f"{BLOCK}.mlp.shared_expert_gate"),
    }, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=(*MOE_SIGNATURE, r"\.mlp\.shared_expert_gate\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("qwen2moe", (QWEN2MOE,))
