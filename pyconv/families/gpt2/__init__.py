"""GPT-2: Conv1D layers store weights [in, out], transposed for GGUF; the fused ``c_attn`` is llama.cpp's
``attn_qkv`` as it is; learned position embeddings; the head is tied to the token embedding."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import HParam
from ...archs.native_layout import NativeLayout, regroup
from ...archs.proof import (
    BACK_TO_HF_TESTS,
    LOGITS_TESTS,
    SAME_AS_SOURCE_AND_LOADER,
    Proof,
)
from ...family import Family

T = gguf.MODEL_TENSOR
BLOCK = "transformer.h.{bid}"
GPT2_HF_NAMES = {
    T.TOKEN_EMBD: HfName("transformer.wte"), T.POS_EMBD: HfName("transformer.wpe"),
    T.OUTPUT_NORM: HfName("transformer.ln_f"), T.OUTPUT: HfName("lm_head"),
    T.ATTN_NORM: HfName(f"{BLOCK}.ln_1"), T.ATTN_QKV: HfName(f"{BLOCK}.attn.c_attn"),
    T.ATTN_OUT: HfName(f"{BLOCK}.attn.c_proj"), T.FFN_NORM: HfName(f"{BLOCK}.ln_2"),
    T.FFN_UP: HfName(f"{BLOCK}.mlp.c_fc"), T.FFN_DOWN: HfName(f"{BLOCK}.mlp.c_proj"),
}
# The fused trainer layout: every Conv1D weight as a Linear's [out, in], with Llama's leaf names, and
# c_attn's (q, k, v) columns cut into q_proj and kv_proj
GPT2_FUSED = (
    regroup((f"{BLOCK}.attn.c_attn",), (f"{BLOCK}.attn.q_proj", f"{BLOCK}.attn.kv_proj"),
            hf_units=(("one", "one", "one"),), fused_units=(("one",), ("one", "one")), transposed=True),
    regroup((f"{BLOCK}.attn.c_proj",), (f"{BLOCK}.attn.o_proj",), transposed=True),
    regroup((f"{BLOCK}.mlp.c_fc",), (f"{BLOCK}.mlp.up_proj",), transposed=True),
    regroup((f"{BLOCK}.mlp.c_proj",), (f"{BLOCK}.mlp.down_proj",), transposed=True),
)


def feed_forward(cfg: Config) -> int:
    return int(cfg.find("n_inner") or 4 * cfg.require("n_embd"))  # n_inner None means 4 × n_embd


GPT2 = Arch(
    name="gpt2",
    hf_architectures=("GPT2LMHeadModel",),
    model_types=("gpt2",),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.GPT2,
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
    ),
    hf=HfLayout(GPT2_HF_NAMES, tied_default=True, buffers=(r"\.attn\.bias$", r"\.attn\.masked_bias$")),
    native=NativeLayout(GPT2_FUSED),
    signature=(r"^transformer\.h\.\d+\.attn\.c_attn\.weight$", r"^transformer\.wpe\.weight$"),
    proof=Proof(("f32", "f16"), to_hf=SAME_AS_SOURCE_AND_LOADER, tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)),
)

FAMILY = Family("gpt2", (GPT2,))
