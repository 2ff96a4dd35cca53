"""GPT-NeoX (Pythia and kin): one fused ``query_key_value`` whose rows HF groups per head, (head, q|k|v,
head_dim), while llama.cpp's ``gptneox`` graph reads q, k and v as contiguous thirds: the rows are regrouped
(weight and bias). Rotary on a share of each head (``rotary_pct``, transformers 5's ``partial_rotary_factor``)
in halves, LayerNorms with biases, a GELU MLP, and attention and MLP in parallel unless
``use_parallel_residual`` is false."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName, TensorFlag
from ...archs.hparams import HParam, head_dim, rotary_dims
from ...archs.llama_like import SKIP_ROTARY
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

T = gguf.MODEL_TENSOR
BLOCK = "gpt_neox.layers.{bid}"
GPTNEOX_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    T.TOKEN_EMBD: HfName("gpt_neox.embed_in"), T.OUTPUT_NORM: HfName("gpt_neox.final_layer_norm"),
    T.OUTPUT: HfName("embed_out"), T.ATTN_NORM: HfName(f"{BLOCK}.input_layernorm"),
    T.FFN_NORM: HfName(f"{BLOCK}.post_attention_layernorm"), T.ATTN_QKV: HfName(f"{BLOCK}.attention.query_key_value"),
    T.ATTN_OUT: HfName(f"{BLOCK}.attention.dense"), T.FFN_UP: HfName(f"{BLOCK}.mlp.dense_h_to_4h"),
    T.FFN_DOWN: HfName(f"{BLOCK}.mlp.dense_4h_to_h"),
}

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
            # before the rotated width, which reads back as a share of the heads' width
            HParam("add_head_count", ("num_attention_heads",)),
            # GPT-NeoX's config reads its own names back (rotary_pct, rotary_emb_base), not the standard ones
            HParam("add_rope_dimension_count", derive=rotary_dims,
                   back=lambda dims, config: {"rotary_pct": dims / head_dim(Config(config))}),
            HParam("add_rope_freq_base", ("rotary_emb_base", "rope_theta"), required=False),
            # a key llama.cpp requires; HF's default is parallel
            HParam("add_parallel_residual", derive=lambda cfg: bool(cfg.get("use_parallel_residual", True)),
                   back=lambda parallel, _config: {"use_parallel_residual": bool(parallel)}),
            HParam("add_layer_norm_eps", ("layer_norm_eps",)),
        ),
        head_grouped=(gguf.MODEL_TENSOR.ATTN_QKV,),
        skip=(*SKIP_ROTARY, r"\.attention\.(bias|masked_bias)$"),
    ),
    hf=HfLayout(GPTNEOX_HF_NAMES, buffers=(*SKIP_ROTARY, r"\.attention\.(bias|masked_bias)$"),
                flags=(TensorFlag("attention_bias", r"^blk\.0\.attn_qkv\.bias$"),)),
    signature=(r"^gpt_neox\.layers\.\d+\.attention\.query_key_value\.weight$",),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("gptneox", (GPTNEOX,))
