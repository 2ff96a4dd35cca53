"""Gemma and Gemma 2. HF stores each RMSNorm weight as w with output (1 + w)·x̂; llama.cpp's graphs
multiply by the stored weight, so GGUF gets w + 1. The output head is always the token embedding.
Their SentencePiece tokenizers add no dummy space prefix."""

from __future__ import annotations

import gguf

from .base import COMMON_HPARAMS, Arch, HParam, register
from .layouts import HfName
from .llama import BLOCK, LLAMA_FUSED, LLAMA_HF_NAMES, SKIP_ROTARY, T

# Gemma 2 norms around both sublayers: "post_attention_layernorm" is a different norm than Llama's
GEMMA2_HF_NAMES = {**LLAMA_HF_NAMES, T.ATTN_POST_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
                   T.FFN_NORM: HfName(f"{BLOCK}.pre_feedforward_layernorm"),
                   T.FFN_POST_NORM: HfName(f"{BLOCK}.post_feedforward_layernorm")}
GEMMA_HF = {"fused": LLAMA_FUSED, "tied_default": True, "hf_buffers": SKIP_ROTARY}

NO_SPACE_PREFIX = (("add_add_space_prefix", False),)

GEMMA = Arch(
    name="gemma",
    hf_architectures=("GemmaForCausalLM",),
    model_types=("gemma",),
    gguf_arch=gguf.MODEL_ARCH.GEMMA,
    norm_shift=1.0,
    constants=NO_SPACE_PREFIX,
    hf_names=LLAMA_HF_NAMES,
    **GEMMA_HF,
)

GEMMA2 = Arch(
    name="gemma2",
    hf_architectures=("Gemma2ForCausalLM",),
    model_types=("gemma2",),
    gguf_arch=gguf.MODEL_ARCH.GEMMA2,
    hparams=(
        *COMMON_HPARAMS,
        HParam("add_attn_logit_softcapping", ("attn_logit_softcapping",), required=False),
        HParam("add_final_logit_softcapping", ("final_logit_softcapping",), required=False),
        # llama.cpp alternates sliding and global layers starting with a sliding one, as HF's default
        HParam("add_sliding_window", ("sliding_window",), required=False),
    ),
    norm_shift=1.0,
    constants=NO_SPACE_PREFIX,
    hf_names=GEMMA2_HF_NAMES,
    signature=(r"^model\.layers\.\d+\.pre_feedforward_layernorm\.weight$",
               r"^model\.layers\.\d+\.post_feedforward_layernorm\.weight$"),
    **GEMMA_HF,
)

register(GEMMA, GEMMA2)
