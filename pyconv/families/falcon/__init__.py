"""Falcon: LayerNorms feeding attention and a GELU MLP in parallel (one for both in 7B, one each in the
``new_decoder_architecture`` of 40B and 180B), rotary in halves, and one fused ``query_key_value`` whose rows
HF groups per key-value head, (group, its query heads then one key and one value head, head_dim), while
llama.cpp's ``falcon`` graph reads all queries, then all keys, then all values: the rows are regrouped. How
many key-value heads there are is transformers' rule (``num_kv_heads`` in the grouped layout, one with
``multi_query``, one per head otherwise), which the config's ``num_kv_heads`` alone does not tell."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout, Requires
from ...archs.hf_layout import HfLayout, HfName, TensorFlag
from ...archs.hparams import HParam
from ...archs.llama_like import SKIP_ROTARY
from ...archs.proof import FAMILY_TESTS, LOADS_BACK_AND_LOADER, Proof
from ...family import Family

T = gguf.MODEL_TENSOR
BLOCK = "transformer.h.{bid}"
FALCON_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    T.TOKEN_EMBD: HfName("transformer.word_embeddings"), T.OUTPUT_NORM: HfName("transformer.ln_f"),
    T.OUTPUT: HfName("lm_head"), T.ATTN_NORM: HfName(f"{BLOCK}.input_layernorm"),
    T.ATTN_QKV: HfName(f"{BLOCK}.self_attention.query_key_value"), T.ATTN_OUT: HfName(f"{BLOCK}.self_attention.dense"),
    T.FFN_UP: HfName(f"{BLOCK}.mlp.dense_h_to_4h"), T.FFN_DOWN: HfName(f"{BLOCK}.mlp.dense_4h_to_h"),
}


def kv_heads(cfg: Config) -> int:
    """transformers' rule: the 40B/180B layout has num_kv_heads, the 7B one (multi_query) one, others one per head."""
    if cfg.get("new_decoder_architecture"):
        return int(cfg.require("num_kv_heads"))
    return 1 if cfg.get("multi_query") else int(cfg.require("num_attention_heads"))


FALCON = Arch(
    name="falcon",
    hf_architectures=("FalconForCausalLM",),
    model_types=("falcon",),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.FALCON,
        hparams=(
            HParam("add_context_length", ("max_position_embeddings",)),
            HParam("add_embedding_length", ("hidden_size",)),
            HParam("add_block_count", ("num_hidden_layers",)),
            HParam("add_feed_forward_length", derive=lambda cfg: int(cfg.find("ffn_hidden_size") or 4 * cfg.require("hidden_size")),
                   back=lambda width, _config: {"ffn_hidden_size": width}),
            HParam("add_head_count", ("num_attention_heads",)),
            HParam("add_head_count_kv", derive=kv_heads,
                   back=lambda heads, _config: {"num_kv_heads": heads, "multi_query": heads == 1}),
            HParam("add_rope_freq_base", ("rope_theta",), required=False),
            HParam("add_layer_norm_eps", ("layer_norm_epsilon",)),
        ),
        kv_grouped=(gguf.MODEL_TENSOR.ATTN_QKV,),
        requires=(Requires("alibi", False, "llama.cpp's graph rotates instead"),),
        skip=SKIP_ROTARY,
    ),
    hf=HfLayout(FALCON_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY,
                flags=(TensorFlag("bias", r"^blk\.0\.attn_qkv\.bias$"),
                       TensorFlag("new_decoder_architecture", r"^blk\.0\.attn_norm_2\.weight$"))),
    signature=(r"^transformer\.h\.\d+\.self_attention\.query_key_value\.weight$",),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK_AND_LOADER, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("falcon", (FALCON,))
