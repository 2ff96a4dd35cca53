"""SmolLM3: Llama's tree and rotary (Q/K rows permuted) with no rotary on every fourth layer (NoPE), which
llama.cpp's ``smollm3`` graph hard-codes: a checkpoint with another pattern is refused."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout, Requires
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

SMOLLM3 = llama_like(
    "smollm3", "SmolLM3ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.SMOLLM3, LLAMA_HPARAMS, permute_qk=True, skip=SKIP_ROTARY,
               requires=(Requires("no_rope_layer_interval", 4, "the graph leaves rotary out of every 4th layer, "
                                                                "whatever the file says"),)),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("smollm3", (SMOLLM3,))
