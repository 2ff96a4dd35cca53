"""ERNIE 4.5 (dense): Llama's tree, its rotary in interleaved pairs, which llama.cpp's ``ernie4_5`` graph
rotates as HF stores them (no Q/K permutation)."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

ERNIE4_5 = llama_like(
    "ernie4_5", "Ernie4_5ForCausalLM", GgufLayout(gguf.MODEL_ARCH.ERNIE4_5, LLAMA_HPARAMS, skip=SKIP_ROTARY),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("ernie4_5", (ERNIE4_5,))
