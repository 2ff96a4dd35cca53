"""Gemma and Gemma 2. HF stores each RMSNorm weight as w with output (1 + w)·x̂; llama.cpp's graphs
multiply by the stored weight, so GGUF gets w + 1. The output head is always the token embedding.
Their SentencePiece tokenizers add no dummy space prefix."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_SIGNATURE, SKIP_ROTARY, T, llama_like
from ...archs.proof import BACK_TO_HF_TESTS, LOGITS_TESTS, Proof
from ...family import Family

# Gemma 2 norms around both sublayers: "post_attention_layernorm" is a different norm than Llama's
GEMMA2_HF_NAMES = {**LLAMA_HF_NAMES, T.ATTN_POST_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
                   T.FFN_NORM: HfName(f"{BLOCK}.pre_feedforward_layernorm"),
                   T.FFN_POST_NORM: HfName(f"{BLOCK}.post_feedforward_layernorm")}

NO_SPACE_PREFIX = (("add_add_space_prefix", False),)

GEMMA = llama_like("gemma", "GemmaForCausalLM",
                   GgufLayout(gguf.MODEL_ARCH.GEMMA, norm_shift=1.0, constants=NO_SPACE_PREFIX),
                   hf=HfLayout(LLAMA_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
                   proof=Proof(("f32", "f16"), to_hf="the source's logits within 1e-5 (norms read back as (w + 1) - 1)",
                               tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)))

GEMMA2 = llama_like(
    "gemma2", "Gemma2ForCausalLM",
    GgufLayout(
        gguf.MODEL_ARCH.GEMMA2,
        hparams=(
            *COMMON_HPARAMS,
            HParam("add_attn_logit_softcapping", ("attn_logit_softcapping",), required=False),
            HParam("add_final_logit_softcapping", ("final_logit_softcapping",), required=False),
            # llama.cpp alternates sliding and global layers starting with a sliding one, as HF's default
            HParam("add_sliding_window", ("sliding_window",), required=False),
        ),
        norm_shift=1.0,
        constants=NO_SPACE_PREFIX,
    ),
    hf=HfLayout(GEMMA2_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
    # Llama's module tree plus the two extra norms: more specific than Llama's, so chosen over it
    signature=(*LLAMA_SIGNATURE, r"^model\.layers\.\d+\.pre_feedforward_layernorm\.weight$",
               r"^model\.layers\.\d+\.post_feedforward_layernorm\.weight$"),
    proof=Proof(("f32",), tests=(LOGITS_TESTS,)),
)

FAMILY = Family("gemma", (GEMMA, GEMMA2))
