"""LFM2 (Liquid): a hybrid of gated short-convolution layers and grouped-query attention layers (``layer_types``),
with q/k RMS-normed per head and the head tied to the embeddings. llama.cpp tells the layer kinds apart by a
per-layer key-value head count (0 for a convolution layer), reads the FFN width after LFM2's own rounding of
``intermediate_size``, and wants each depthwise convolution kernel as a matrix [channels, width] where HF keeps
[channels, 1, width]. A GGUF read back says the FFN width as it is (``block_auto_adjust_ff_dim`` off)."""

from __future__ import annotations

from typing import Any

import gguf

from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, SKIP_ROTARY, T, llama_like
from ...archs.proof import FAMILY_TESTS, LOADS_BACK_AND_LOADER, Proof
from ...family import Family


def kv_heads_per_layer(cfg: Config) -> list[int]:
    n_kv = int(cfg.find("num_key_value_heads") or cfg.require("num_attention_heads"))
    return [0 if kind == "conv" else n_kv for kind in cfg.require("layer_types")]


def layer_kinds(kv_heads: list[int], _config: dict[str, Any]) -> dict[str, Any]:
    return {"num_key_value_heads": max(kv_heads),
            "layer_types": ["conv" if n == 0 else "full_attention" for n in kv_heads]}


def ffn_width(cfg: Config) -> int:
    """The FFN width LFM2's modeling code builds: two thirds of ``intermediate_size``, times the multiplier,
    rounded up to ``block_multiple_of`` (when ``block_auto_adjust_ff_dim``)."""
    width = int(cfg.require("block_ff_dim", "intermediate_size"))
    if cfg.find("block_auto_adjust_ff_dim"):
        width = int(2 * width / 3)
        if (multiplier := cfg.find("block_ffn_dim_multiplier")) is not None:
            width = int(multiplier * width)
        multiple = int(cfg.require("block_multiple_of"))
        width = multiple * ((width + multiple - 1) // multiple)
    return width


LFM2_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k in (T.TOKEN_EMBD, T.OUTPUT, T.ATTN_Q, T.ATTN_K, T.ATTN_V)},
    T.TOKEN_EMBD_NORM: HfName("model.embedding_norm"), T.ATTN_NORM: HfName(f"{BLOCK}.operator_norm"),
    T.FFN_NORM: HfName(f"{BLOCK}.ffn_norm"), T.ATTN_OUT: HfName(f"{BLOCK}.self_attn.out_proj"),
    T.ATTN_Q_NORM: HfName(f"{BLOCK}.self_attn.q_layernorm"), T.ATTN_K_NORM: HfName(f"{BLOCK}.self_attn.k_layernorm"),
    T.FFN_GATE: HfName(f"{BLOCK}.feed_forward.w1"), T.FFN_UP: HfName(f"{BLOCK}.feed_forward.w3"),
    T.FFN_DOWN: HfName(f"{BLOCK}.feed_forward.w2"), T.SHORTCONV_CONV: HfName(f"{BLOCK}.conv.conv"),
    T.SHORTCONV_INPROJ: HfName(f"{BLOCK}.conv.in_proj"), T.SHORTCONV_OUTPROJ: HfName(f"{BLOCK}.conv.out_proj"),
}

LFM2 = llama_like(
    "lfm2", "Lfm2ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.LFM2, (
        *(h for h in COMMON_HPARAMS if h.method not in ("add_head_count_kv", "add_feed_forward_length")),
        HParam("add_vocab_size", ("vocab_size",)),
        HParam("add_head_count_kv", derive=kv_heads_per_layer, back=layer_kinds),
        HParam("add_feed_forward_length", derive=ffn_width,
               back=lambda width, _config: {"intermediate_size": width, "block_auto_adjust_ff_dim": False}),
        HParam("add_shortconv_l_cache", ("conv_L_cache",)),
        HParam("add_layer_norm_rms_eps", ("norm_eps",)),
    ), skip=SKIP_ROTARY, squeezed=(gguf.MODEL_TENSOR.SHORTCONV_CONV,)),
    # the norm before either kind of operator and the FFN's w1/w2/w3 are in every layer
    signature=(r"^model\.layers\.\d+\.operator_norm\.weight$", r"^model\.layers\.\d+\.feed_forward\.w1\.weight$"),
    hf=HfLayout(LFM2_HF_NAMES, tied_default=True, buffers=SKIP_ROTARY),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK_AND_LOADER, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("lfm2", (LFM2,))
