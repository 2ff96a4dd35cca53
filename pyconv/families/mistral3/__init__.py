"""Ministral 3 (text): Llama's tree and rotary (Q/K rows permuted for llama.cpp's ``mistral3`` graph) with
YaRN rope scaling and Llama 4's query temperature (queries scaled by 1 + β·log(1 + ⌊pos / original context⌋)):
the YaRN keys, ``mscale_all_dim`` as the YaRN log multiplier and ``llama_4_scaling_beta`` as the temperature
scale are the fixes."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import ROPE_SCALING_HPARAMS, HParam, yarn_only
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, Proof
from ...family import Family

MINISTRAL3 = llama_like(
    "mistral3", "Ministral3ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.MISTRAL3, (
        *LLAMA_HPARAMS, *ROPE_SCALING_HPARAMS,
        HParam("add_rope_scaling_yarn_log_mul", derive=yarn_only("mscale_all_dim"), required=False),
        HParam("add_attn_temperature_scale", derive=yarn_only("llama_4_scaling_beta"), required=False),
    ), permute_qk=True, skip=SKIP_ROTARY),
    model_types=("ministral3",),
    proof=Proof(("f32", "f16", "q8_0"), tests=(FAMILY_TESTS,)),
)

FAMILY = Family("mistral3", (MINISTRAL3,))
