"""GLM-4.5 (GLM-4 MoE): Llama's tree with partial rotary (halves of the rotated share, as HF holds them), dense
layers before ``first_k_dense_replace``, then routed experts chosen by sigmoid scores biased by
``gate.e_score_correction_bias``, renormalised and scaled by ``routed_scaling_factor``, plus
``n_shared_experts`` shared experts held as one MLP. The multi-token-prediction layers transformers drops are
not written, so llama.cpp runs the trunk."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import ExpertStack, GgufLayout, Requires
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import PARTIAL_ROTARY, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_HPARAMS, SKIP_ROTARY, T, llama_like
from ...archs.moe_like import EXPERT_WIDTH, EXPERTS_SPLIT, MOE_HF_NAMES, MOE_SIGNATURE
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

SHARED = f"{BLOCK}.mlp.shared_experts"

GLM4MOE = llama_like(
    "glm4_moe", "Glm4MoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.GLM4_MOE,
               (*(h for h in LLAMA_HPARAMS if h.method not in ("add_expert_count", "add_rope_dimension_count")),
                PARTIAL_ROTARY, HParam("add_expert_count", ("n_routed_experts",)), EXPERT_WIDTH,
                HParam("add_expert_shared_count", ("n_shared_experts",)),
                HParam("add_leading_dense_block_count", ("first_k_dense_replace",)),
                HParam("add_expert_weights_scale", ("routed_scaling_factor",)),
                HParam("add_expert_weights_norm", ("norm_topk_prob",))),
               skip=SKIP_ROTARY, constants=(("add_expert_gating_func", gguf.ExpertGatingFuncType.SIGMOID),),
               experts=ExpertStack(
                   pattern=r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$",
                   parts={"gate_proj": T.FFN_GATE_EXP, "up_proj": T.FFN_UP_EXP, "down_proj": T.FFN_DOWN_EXP},
                   count_fields=("n_routed_experts",)),
               splits=(EXPERTS_SPLIT,),
               requires=(Requires("n_group", 1, "llama.cpp's glm4moe graph does not route by expert groups"),)),
    hf=HfLayout({
        **{k: v for k, v in {**LLAMA_HF_NAMES, **MOE_HF_NAMES}.items() if k != T.FFN_NORM},
        # llama.cpp's glm4moe graph names the FFN's pre-norm after the attention
        T.ATTN_POST_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
        T.FFN_GATE_SHEXP: HfName(f"{SHARED}.gate_proj"), T.FFN_UP_SHEXP: HfName(f"{SHARED}.up_proj"),
        T.FFN_DOWN_SHEXP: HfName(f"{SHARED}.down_proj"),
        T.FFN_EXP_PROBS_B: HfName(f"{BLOCK}.mlp.gate.e_score_correction_bias", bare=True),
    }, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=(*MOE_SIGNATURE, r"\.mlp\.gate\.e_score_correction_bias$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("glm4moe", (GLM4MOE,))
