"""OLMoE: Llama's pre-norm tree with q and k RMS-normed over all heads together (so llama.cpp's ``olmoe`` graph
needs as many key-value heads as query heads) and routed experts as wide as ``intermediate_size``. The graph
keeps the top-k routing weights as the softmax gives them, as ``norm_topk_prob=False`` says."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout, Requires
from ...archs.hf_layout import HfLayout, HfName
from ...archs.llama_like import BLOCK, SKIP_ROTARY, T, llama_like
from ...archs.moe_like import EXPERTS_SPLIT, EXPERTS_STACK, MOE_HF_NAMES, MOE_HPARAMS, MOE_SIGNATURE
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

OLMOE = llama_like(
    "olmoe", "OlmoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.OLMOE, MOE_HPARAMS, experts=EXPERTS_STACK, splits=(EXPERTS_SPLIT,), skip=SKIP_ROTARY,
               requires=(Requires("norm_topk_prob", False, "llama.cpp's olmoe graph keeps the top-k weights as the "
                                                            "softmax gives them"),)),
    hf=HfLayout({**MOE_HF_NAMES, T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_norm"),
                 T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_norm")}, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=MOE_SIGNATURE,
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("olmoe", (OLMOE,))
