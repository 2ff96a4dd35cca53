"""GLM-4 (0414): Llama's tree with q/k/v biases, gate and up fused in ``gate_up_proj`` (gate rows first, as
llama.cpp's ``ffn_up`` takes them), a norm after each sublayer besides the ones before, and rotary on the
first half of each head only, in interleaved pairs, which llama.cpp's ``glm4`` graph rotates as HF stores
them: the rotated width is the fix."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, PARTIAL_ROTARY
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, SKIP_ROTARY, T, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

GLM4_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP)},
    T.FFN_UP: HfName(f"{BLOCK}.mlp.gate_up_proj"),
    T.ATTN_POST_NORM: HfName(f"{BLOCK}.post_self_attn_layernorm"),
    T.FFN_POST_NORM: HfName(f"{BLOCK}.post_mlp_layernorm"),
}

GLM4 = llama_like(
    "glm4", "Glm4ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.GLM4, (*COMMON_HPARAMS, PARTIAL_ROTARY),
               skip=SKIP_ROTARY),
    hf=HfLayout(GLM4_HF_NAMES, buffers=SKIP_ROTARY),
    signature=(r"^model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"^model\.layers\.\d+\.mlp\.gate_up_proj\.weight$",
               r"\.post_self_attn_layernorm\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("glm4", (GLM4,))
