"""GPT-NeoX (Pythia and kin): one fused ``query_key_value`` whose rows HF groups per head, (head, q|k|v,
head_dim), while llama.cpp's ``gptneox`` graph reads q, k and v as contiguous thirds: the rows are regrouped
(weight and bias). Rotary on a share of each head (``rotary_pct``, transformers 5's ``partial_rotary_factor``)
in halves, LayerNorms with biases, a GELU MLP, and attention and MLP in parallel unless
``use_parallel_residual`` is false."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import PARTIAL_ROTARY, HParam
from ...archs.llama_like import SKIP_ROTARY
from ...archs.proof import FAMILY_TESTS, Proof
from ...family import Family

GPTNEOX = Arch(
    name="gptneox",
    hf_architectures=("GPTNeoXForCausalLM",),
    model_types=("gpt_neox",),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.GPTNEOX,
        hparams=(
            HParam("add_context_length", ("max_position_embeddings",)),
            HParam("add_embedding_length", ("hidden_size",)),
            HParam("add_block_count", ("num_hidden_layers",)),
            HParam("add_feed_forward_length", ("intermediate_size",)),
            PARTIAL_ROTARY,
            HParam("add_rope_freq_base", ("rope_theta",), required=False),
            HParam("add_head_count", ("num_attention_heads",)),
            # a key llama.cpp requires; HF's default is parallel
            HParam("add_parallel_residual", derive=lambda cfg: bool(cfg.get("use_parallel_residual", True))),
            HParam("add_layer_norm_eps", ("layer_norm_eps",)),
        ),
        head_grouped=(gguf.MODEL_TENSOR.ATTN_QKV,),
        skip=(*SKIP_ROTARY, r"\.attention\.(bias|masked_bias)$"),
    ),
    signature=(r"^gpt_neox\.layers\.\d+\.attention\.query_key_value\.weight$",),
    proof=Proof(("f32", "f16", "q8_0"), tests=(FAMILY_TESTS,)),
)

FAMILY = Family("gptneox", (GPTNEOX,))
