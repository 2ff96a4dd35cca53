"""NeoBERT as llama.cpp's ``neo-bert`` encoder runs it: the trainer's tensors, fused and regrouped the way
that graph reads them, and the hyper-parameters it needs."""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.gguf_layout import Fuse, GgufLayout, Requires
from ...archs.hparams import HParam
from ...archs.proof import Proof
from .model import ARCHITECTURE, EXTRA_TOKEN, MODEL_TYPE, ffn_width

# NeoBERT's rotary embedding has a fixed base
ROPE_BASE = 10000.0

NEOBERT = Arch(
    name="neobert",
    hf_architectures=(ARCHITECTURE, "NeoBERT"),
    model_types=(MODEL_TYPE,),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.NEO_BERT,
        hparams=(
            HParam("add_context_length", ("max_position_embeddings",)),
            HParam("add_embedding_length", ("hidden_size",)),
            HParam("add_block_count", ("num_hidden_layers",)),
            # the trainer's rounded I', the width of each half of ffn_up (llama.cpp's converter writes int(2I/3),
            # which does not load when the rounding changed it)
            HParam("add_feed_forward_length", derive=ffn_width),
            HParam("add_head_count", ("num_attention_heads",)),
            HParam("add_layer_norm_rms_eps", ("norm_eps",)),
        ),
        # mean pooling over all tokens, [CLS] and [SEP] included: the sentence embedding the HF export's README
        # computes and `pyconv validate` scores; llama.cpp's --pooling chooses another per run
        constants=(("add_causal_attention", False), ("add_rope_freq_base", ROPE_BASE),
                   ("add_pooling_type", gguf.PoolingType.MEAN)),
        # the masked-LM decoder (and a legacy bias): llama.cpp's neo-bert gives embeddings only
        skip=(r"^decoder\.",),
        # llama.cpp's SwiGLU applies silu to the first half of ffn_up: the gate w1, as in xformers' packed w12
        fuses=(Fuse(("transformer_encoder.{bid}.ffn.w1", "transformer_encoder.{bid}.ffn.w2"), gguf.MODEL_TENSOR.FFN_UP),),
        # llama.cpp's graph takes Q, K and V as contiguous thirds of the fused output
        head_grouped=(gguf.MODEL_TENSOR.ATTN_QKV,),
        requires=(
            Requires("hidden_act", "swiglu", "its FFN is SwiGLU only; --to hf exports a GELU NeoBERT"),
            Requires("rms_norm", True, "its norms are RMSNorm without bias; --to hf exports a LayerNorm NeoBERT"),
            Requires("rope", True, "it rotates queries and keys and has no position table; --to hf exports a NeoBERT "
                                   "with learned positions"),
        ),
        # the trainer saves the run's tokenizer in the checkpoint's tokenizer/ and pads the vocabulary as the HF export does
        tokenizer_dirs=("tokenizer",),
        vocab_filler=EXTRA_TOKEN,
    ),
    prefixes=("model.",),
    proof=Proof(("f32", "f16", "bf16", "q8_0"), against="the training forward's hidden states",
                tests=("tests/test_export_neobert_gguf.py",)),
)
