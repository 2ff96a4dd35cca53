"""Granite (dense): Llama's tree and rotary (Q/K rows permuted for llama.cpp's ``granite`` graph) with four
scalars of its own: the embeddings, each residual branch and the attention scores are multiplied by
``embedding_multiplier``, ``residual_multiplier`` and ``attention_multiplier`` (instead of 1/sqrt(d)), and the
logits divided by ``logits_scaling``."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import HParam
from ...archs.llama_like import LLAMA_HPARAMS, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

GRANITE_SCALES = (
    HParam("add_embedding_scale", ("embedding_multiplier",), required=False),
    HParam("add_residual_scale", ("residual_multiplier",), required=False),
    HParam("add_attention_scale", ("attention_multiplier",), required=False),
    HParam("add_logit_scale", ("logits_scaling",), required=False),
)

GRANITE = llama_like(
    "granite", "GraniteForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.GRANITE, (*LLAMA_HPARAMS, *GRANITE_SCALES), permute_qk=True, skip=SKIP_ROTARY),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("granite", (GRANITE,))
