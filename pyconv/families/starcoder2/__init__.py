"""StarCoder2: Llama's attention with biases, LayerNorms with biases (``norm_epsilon``) and a GELU MLP
(``c_fc``, ``c_proj``) that gguf-py's name map places; llama.cpp's ``starcoder2`` graph rotates halves, the
order HF holds Q/K in."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, SKIP_ROTARY, T, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK_AND_LOADER, Proof
from ...family import Family

STARCODER2_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)},
    T.FFN_UP: HfName(f"{BLOCK}.mlp.c_fc"), T.FFN_DOWN: HfName(f"{BLOCK}.mlp.c_proj"),
}

STARCODER2 = llama_like(
    "starcoder2", "Starcoder2ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.STARCODER2, (*COMMON_HPARAMS, HParam("add_layer_norm_eps", ("norm_epsilon",))),
               skip=SKIP_ROTARY),
    hf=HfLayout(STARCODER2_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
    signature=(r"^model\.layers\.\d+\.self_attn\.q_proj\.bias$", r"^model\.layers\.\d+\.mlp\.c_fc\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK_AND_LOADER, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("starcoder2", (STARCODER2,))
