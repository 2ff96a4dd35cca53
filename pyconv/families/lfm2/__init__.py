"""LFM2 (Liquid): a hybrid of gated short-convolution layers and grouped-query attention layers (``layer_types``),
with q/k RMS-normed per head and the head tied to the embeddings. llama.cpp tells the layer kinds apart by a
per-layer key-value head count (0 for a convolution layer), reads the FFN width after LFM2's own rounding of
``intermediate_size``, and wants each depthwise convolution kernel as a matrix [channels, width] where HF keeps
[channels, 1, width]. Only HF → GGUF: GGUF → HF would need the kernels given their middle axis back."""

from __future__ import annotations

import gguf

from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.llama_like import SKIP_ROTARY, llama_like
from ...archs.proof import FAMILY_TESTS, Proof
from ...family import Family


def kv_heads_per_layer(cfg: Config) -> list[int]:
    n_kv = int(cfg.find("num_key_value_heads") or cfg.require("num_attention_heads"))
    return [0 if kind == "conv" else n_kv for kind in cfg.require("layer_types")]


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


LFM2 = llama_like(
    "lfm2", "Lfm2ForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.LFM2, (
        *(h for h in COMMON_HPARAMS if h.method not in ("add_head_count_kv", "add_feed_forward_length")),
        HParam("add_vocab_size", ("vocab_size",)),
        HParam("add_head_count_kv", derive=kv_heads_per_layer),
        HParam("add_feed_forward_length", derive=ffn_width),
        HParam("add_shortconv_l_cache", ("conv_L_cache",)),
        HParam("add_layer_norm_rms_eps", ("norm_eps",)),
    ), skip=SKIP_ROTARY, squeezed=(gguf.MODEL_TENSOR.SHORTCONV_CONV,)),
    # the norm before either kind of operator and the FFN's w1/w2/w3 are in every layer
    signature=(r"^model\.layers\.\d+\.operator_norm\.weight$", r"^model\.layers\.\d+\.feed_forward\.w1\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), tests=(FAMILY_TESTS,)),
)

FAMILY = Family("lfm2", (LFM2,))
