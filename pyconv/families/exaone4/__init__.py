"""EXAONE 4: OLMo 2's post-norm block (``post_attention_layernorm`` after attention, no norm before it) with
q/k RMS-normed per head; llama.cpp's ``exaone4`` graph rotates halves, the order HF holds Q/K in. That graph
applies a sliding window only to the 64-layer model, whatever the file says."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family
from ..olmo2 import OLMO2_HF_NAMES

EXAONE4 = llama_like(
    "exaone4", "Exaone4ForCausalLM", GgufLayout(gguf.MODEL_ARCH.EXAONE4, LLAMA_HPARAMS, skip=SKIP_ROTARY),
    hf=HfLayout(OLMO2_HF_NAMES, buffers=SKIP_ROTARY),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("exaone4", (EXAONE4,))
