"""Command R7B (Cohere 2): one LayerNorm (no bias) feeding attention and MLP in parallel, the head tied to the
embeddings and the logits scaled by ``logit_scale``; layers alternate a sliding window (with rotary, in
interleaved pairs, as llama.cpp's ``cohere2`` graph rotates them) and full attention without rotary. The
window, the per-layer pattern from ``layer_types`` and the logit scale are the fixes."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, SLIDING_PATTERN, HParam
from ...archs.llama_like import LLAMA_HF_NAMES, SKIP_ROTARY, T, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

# one norm before the parallel block, and the head is the embedding
COHERE2_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_NORM, T.OUTPUT)}

COHERE2 = llama_like(
    "cohere2", "Cohere2ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.COHERE2, (
        *COMMON_HPARAMS,
        HParam("add_vocab_size", ("vocab_size",)),
        HParam("add_logit_scale", ("logit_scale",)),
        HParam("add_sliding_window", ("sliding_window",)),
        SLIDING_PATTERN,
    ), skip=SKIP_ROTARY),
    hf=HfLayout(COHERE2_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("cohere2", (COHERE2,))
