"""StableLM (2): Llama's tree with LayerNorms with biases, optional q/k/v biases and rotary on a share of each
head only (``partial_rotary_factor``), in halves as HF stores them: the rotated width is the fix. With
``use_parallel_residual`` the checkpoint has no FFN norm, which llama.cpp's ``stablelm`` graph takes as the
parallel block it is."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, TensorFlag
from ...archs.hparams import COMMON_HPARAMS, PARTIAL_ROTARY
from ...archs.llama_like import LLAMA_HF_NAMES, SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK_AND_LOADER, Proof
from ...family import Family

STABLELM = llama_like(
    "stablelm", "StableLmForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.STABLELM, (*COMMON_HPARAMS, PARTIAL_ROTARY),
               skip=SKIP_ROTARY),
    hf=HfLayout(LLAMA_HF_NAMES, buffers=SKIP_ROTARY, flags=(
        TensorFlag("use_qkv_bias", r"^blk\.0\.attn_q\.bias$"),
        TensorFlag("use_parallel_residual", r"^blk\.0\.ffn_norm\.weight$", present=False),
    )),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK_AND_LOADER, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("stablelm", (STABLELM,))
