"""Gemma, Gemma 2 and Gemma 3. HF stores each RMSNorm weight as w with output (1 + w)·x̂ (Gemma 3's per-head
q/k norms too); llama.cpp's graphs multiply by the stored weight, so GGUF gets w + 1. The output head is always
the token embedding. Their SentencePiece tokenizers add no dummy space prefix.

Gemma 3 alternates sliding-window and global layers (``layer_types``), each kind with its own rope base; llama.cpp
scales queries by 1/√head_dim (the 27B's hidden/heads), which is what every released ``query_pre_attn_scalar``
says, so a GGUF read back sets it to the key length. Gemma3ForConditionalGeneration checkpoints hold the same text
model under ``language_model``; their vision tower is not the text model's and is left out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gguf

from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, SLIDING_PATTERN, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_SIGNATURE, SKIP_ROTARY, T, llama_like
from ...archs.proof import BACK_TO_HF_TESTS, FAMILY_TESTS, LOADS_BACK_AND_LOADER, LOGITS_TESTS, Proof
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



def layer_rope(kind: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """A ``back`` putting a rope base into transformers 5's per-layer-kind ``rope_parameters``."""
    return lambda theta, config: {"rope_parameters": {**(config.get("rope_parameters") or {}),
                                                      kind: {"rope_type": "default", "rope_theta": theta}}}


def local_rope_base(cfg: Config) -> Any:
    rope = cfg.get("rope_parameters")
    return rope.get("sliding_attention", {}).get("rope_theta") if isinstance(rope, dict) else None


GEMMA3_HPARAMS = (
    *(h for h in COMMON_HPARAMS if h.method not in ("add_rope_freq_base", "add_key_length")),
    # the global layers' base; the sliding ones have their own
    HParam("add_rope_freq_base", ("rope_theta",), required=False, back=layer_rope("full_attention")),
    HParam("add_rope_freq_base_swa", derive=local_rope_base, required=False, back=layer_rope("sliding_attention")),
    HParam("add_key_length", ("head_dim",), required=False,
           back=lambda d, _config: {"head_dim": d, "query_pre_attn_scalar": d}),
    HParam("add_final_logit_softcapping", ("final_logit_softcapping",), required=False),
    HParam("add_sliding_window", ("sliding_window",), required=False),
    SLIDING_PATTERN,
)

GEMMA3_HF_NAMES = {**GEMMA2_HF_NAMES, T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_norm"),
                   T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_norm")}

GEMMA3 = dataclasses.replace(llama_like(
    "gemma3", ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    GgufLayout(gguf.MODEL_ARCH.GEMMA3, GEMMA3_HPARAMS, norm_shift=1.0, constants=NO_SPACE_PREFIX,
               skip=(*SKIP_ROTARY, r"^(model\.)?(vision_tower|multi_modal_projector)\.")),
    hf=HfLayout(GEMMA3_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
    model_types=("gemma3_text", "gemma3"),
    signature=(*LLAMA_SIGNATURE, r"^model\.layers\.\d+\.pre_feedforward_layernorm\.weight$",
               r"\.self_attn\.q_norm\.weight$", r"\.self_attn\.k_norm\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK_AND_LOADER, tests=(FAMILY_TESTS,)),
), prefixes=("language_model.",))

FAMILY = Family("gemma", (GEMMA, GEMMA2, GEMMA3))
