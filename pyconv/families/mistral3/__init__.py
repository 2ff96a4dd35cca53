"""Ministral 3 (text): Llama's tree and rotary (Q/K rows permuted for llama.cpp's ``mistral3`` graph) with
YaRN rope scaling and Llama 4's query temperature (queries scaled by 1 + β·log(1 + ⌊pos / original context⌋)):
the YaRN keys, ``mscale_all_dim`` as the YaRN log multiplier and ``llama_4_scaling_beta`` as the temperature
scale are the fixes."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import ROPE_SCALING_HPARAMS, yarn
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

MINISTRAL3 = llama_like(
    "mistral3", "Ministral3ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.MISTRAL3, (
        *LLAMA_HPARAMS, *ROPE_SCALING_HPARAMS,
        # llama.cpp takes mscale as 1 beside it, so that is what goes back
        yarn("add_rope_scaling_yarn_log_mul", "mscale_all_dim", mscale=1.0),
        yarn("add_attn_temperature_scale", "llama_4_scaling_beta"),
    ), permute_qk=True, skip=SKIP_ROTARY),
    model_types=("ministral3",),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("mistral3", (MINISTRAL3,))
