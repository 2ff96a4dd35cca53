"""GPT-2: Conv1D layers store weights [in, out], transposed for GGUF; the fused ``c_attn`` is llama.cpp's
``attn_qkv`` as it is; learned position embeddings; the head is tied to the token embedding."""

from __future__ import annotations

import gguf

from .base import Arch, Config, HParam, register


def feed_forward(cfg: Config) -> int:
    return int(cfg.find("n_inner") or 4 * cfg.require("n_embd"))  # n_inner None means 4 × n_embd


GPT2 = Arch(
    name="gpt2",
    hf_architectures=("GPT2LMHeadModel",),
    model_types=("gpt2",),
    gguf_arch=gguf.MODEL_ARCH.GPT2,
    hparams=(
        HParam("add_context_length", ("n_positions", "n_ctx")),
        HParam("add_embedding_length", ("n_embd",)),
        HParam("add_block_count", ("n_layer",)),
        HParam("add_feed_forward_length", derive=feed_forward),
        HParam("add_head_count", ("n_head",)),
        HParam("add_layer_norm_eps", ("layer_norm_epsilon",)),
    ),
    transposed=(".c_attn.weight", ".c_proj.weight", ".c_fc.weight"),
    # causal-mask buffers older checkpoints saved with the weights
    skip=(r"\.attn\.bias$", r"\.attn\.masked_bias$"),
)

register(GPT2)
