"""BitNet b1.58: llama-shaped decoders whose seven projections are ternary, with an RMS norm before
the attention output and the down projection (docs/i2s.md, "BitNet models in GGUF").

transformers' ``BitNetForCausalLM`` (2B-4T: ``attn_sub_norm``/``ffn_sub_norm``, ReLU²) and the older
1bitLLM ``BitnetForCausalLM`` (``inner_attn_ln``/``ffn_layernorm``, SiLU) write the same GGUF. Mainline
llama.cpp runs them as ``bitnet`` with a SiLU-gated FFN; only BitNet.cpp has I2_S kernels, and it
runs its files as ``bitnet-b1.58`` with ReLU². Both graphs reuse ``token_embd`` as the output head
and rotate Q/K in NeoX halves, the order HF holds them in.
"""

from __future__ import annotations

import gguf

from ...archs.arch import Arch
from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import HParam
from ...archs.llama_like import BLOCK, LLAMA_HPARAMS, LLAMA_SIGNATURE, SKIP_ROTARY
from ...archs.proof import Proof
from ...family import Family

# BitNet.cpp's name for the 2B-4T graph; gguf-py 0.19 has no MODEL_ARCH for it
BITNET_B158 = "bitnet-b1.58"

# BitNet-rs reads these literal keys, whatever general.architecture says, and its strict mode
# requires them; in a "bitnet" file two of them are llama.cpp's own keys as well
BITNET_RS = (
    HParam("add_uint32", ("hidden_size",), key="bitnet.hidden_size"),
    HParam("add_uint32", ("num_hidden_layers",), key="bitnet.num_layers"),
    HParam("add_uint32", ("num_attention_heads",), key="bitnet.num_heads"),
    HParam("add_uint32", ("vocab_size",), key="bitnet.vocab_size"),
    HParam("add_uint32", ("max_position_embeddings",), key="bitnet.context_length"),
)

BITNET = Arch(
    name="bitnet",
    hf_architectures=("BitNetForCausalLM", "BitnetForCausalLM"),
    model_types=("bitnet",),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.BITNET,
        hparams=(*LLAMA_HPARAMS, *BITNET_RS),
        skip=SKIP_ROTARY,
        ternarize="absmean",
        arch_names={"i2_s": BITNET_B158},
        graph_activations={"bitnet": "silu", BITNET_B158: "relu2"},
        # gguf-py 0.19 maps only the 1bitLLM sub-norm names
        extra_names={f"{BLOCK}.self_attn.attn_sub_norm": gguf.MODEL_TENSOR.ATTN_SUB_NORM,
                     f"{BLOCK}.mlp.ffn_sub_norm": gguf.MODEL_TENSOR.FFN_SUB_NORM},
    ),
    signature=(*LLAMA_SIGNATURE, r"\.(attn_sub_norm|inner_attn_ln)\.weight$"),
    # I2_S has no runtime here (BitNet.cpp): its bytes are checked against BitNet's own quantizer instead
    proof=Proof(("f32", "tq2_0", "tq1_0"), tests=("tests/test_bitnet.py",)),
)

FAMILY = Family("bitnet", (BITNET,))
