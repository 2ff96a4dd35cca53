"""OLMo 2: Llama's tree with the norms after each sublayer instead of before (``post_attention_layernorm`` is
llama.cpp's ``attn_post_norm`` here, not Llama's FFN norm) and q/k RMS-normed over all heads together.
llama.cpp's ``olmo2`` graph rotates halves (NeoX), the order HF holds Q/K in."""

from __future__ import annotations

import gguf

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
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

OLMO2_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.ATTN_NORM, T.FFN_NORM)},
    T.ATTN_POST_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
    T.FFN_POST_NORM: HfName(f"{BLOCK}.post_feedforward_layernorm"),
    T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_norm"), T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_norm"),
}

OLMO2 = llama_like(
    "olmo2", "Olmo2ForCausalLM", GgufLayout(gguf.MODEL_ARCH.OLMO2, skip=SKIP_ROTARY),
    hf=HfLayout(OLMO2_HF_NAMES, buffers=SKIP_ROTARY),
    signature=(*LLAMA_SIGNATURE, r"\.self_attn\.k_norm\.weight$", r"^model\.layers\.\d+\.post_feedforward_layernorm\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("olmo2", (OLMO2,))
