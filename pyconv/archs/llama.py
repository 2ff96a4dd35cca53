"""LLaMA, Mistral and Mixtral: llama.cpp's ``llama`` architecture with permuted Q/K rows."""

from __future__ import annotations

import gguf

from .base import COMMON_HPARAMS, Arch, ExpertStack, HParam, Split, head_dim, register
from .layouts import HfName, regroup

T = gguf.MODEL_TENSOR
BLOCK = "model.layers.{bid}"
# HF names of the decoder families that follow Llama's module tree
LLAMA_HF_NAMES = {
    T.TOKEN_EMBD: HfName("model.embed_tokens"), T.OUTPUT_NORM: HfName("model.norm"), T.OUTPUT: HfName("lm_head"),
    T.ATTN_NORM: HfName(f"{BLOCK}.input_layernorm"), T.FFN_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
    T.ATTN_Q: HfName(f"{BLOCK}.self_attn.q_proj"), T.ATTN_K: HfName(f"{BLOCK}.self_attn.k_proj"),
    T.ATTN_V: HfName(f"{BLOCK}.self_attn.v_proj"), T.ATTN_OUT: HfName(f"{BLOCK}.self_attn.o_proj"),
    T.FFN_GATE: HfName(f"{BLOCK}.mlp.gate_proj"), T.FFN_UP: HfName(f"{BLOCK}.mlp.up_proj"),
    T.FFN_DOWN: HfName(f"{BLOCK}.mlp.down_proj"),
}
# The fused trainer layout: K and V as one projection, gate and up as one (gate rows first)
KV_FUSED = regroup((f"{BLOCK}.self_attn.k_proj", f"{BLOCK}.self_attn.v_proj"), (f"{BLOCK}.self_attn.kv_proj",),
                   fused_units=(("one", "one"),))
GATE_UP_FUSED = regroup((f"{BLOCK}.mlp.gate_proj", f"{BLOCK}.mlp.up_proj"), (f"{BLOCK}.mlp.gate_up_proj",),
                        fused_units=(("one", "one"),))
LLAMA_FUSED = (KV_FUSED, GATE_UP_FUSED)
LLAMA_SIGNATURE = (r"^model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"^model\.layers\.\d+\.mlp\.gate_proj\.weight$")
SKIP_ROTARY = (r"\.rotary_emb\.inv_freq$",)
LLAMA_HF = {"hf_names": LLAMA_HF_NAMES, "fused": LLAMA_FUSED, "hf_buffers": SKIP_ROTARY}

LLAMA_HPARAMS = (
    *COMMON_HPARAMS,
    HParam("add_vocab_size", ("vocab_size",)),
    HParam("add_rope_dimension_count", derive=head_dim),
)

LLAMA = Arch(
    name="llama",
    hf_architectures=("LlamaForCausalLM", "LLaMAForCausalLM"),
    model_types=("llama",),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    hparams=LLAMA_HPARAMS,
    permute_qk=True,
    skip=SKIP_ROTARY,
    signature=LLAMA_SIGNATURE,
    **LLAMA_HF,
)

MISTRAL = Arch(
    name="mistral",
    hf_architectures=("MistralForCausalLM",),
    model_types=("mistral",),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    hparams=LLAMA_HPARAMS,
    permute_qk=True,
    skip=SKIP_ROTARY,
    **LLAMA_HF,
)

MIXTRAL = Arch(
    name="mixtral",
    hf_architectures=("MixtralForCausalLM",),
    model_types=("mixtral",),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    hparams=LLAMA_HPARAMS,
    permute_qk=True,
    skip=SKIP_ROTARY,
    experts=ExpertStack(
        pattern=r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$",
        parts={"w1": gguf.MODEL_TENSOR.FFN_GATE_EXP, "w2": gguf.MODEL_TENSOR.FFN_DOWN_EXP, "w3": gguf.MODEL_TENSOR.FFN_UP_EXP},
        count_fields=("num_local_experts",),
    ),
    # transformers 5 holds the experts fused ([expert, 2 * ffn, embd], gate rows first: its forward
    # chunks the projection into (gate, up)); a checkpoint saved from its state dict keeps that
    # layout, and down_proj [expert, embd, ffn] is already llama.cpp's ffn_down_exps
    splits=(Split(r"^model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj$", 1,
                  (gguf.MODEL_TENSOR.FFN_GATE_EXP, gguf.MODEL_TENSOR.FFN_UP_EXP)),),
    hf_names={
        **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)},
        T.FFN_GATE_INP: HfName(f"{BLOCK}.mlp.gate"),
        T.FFN_GATE_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=0, of=2, bare=True),
        T.FFN_UP_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=1, of=2, bare=True),
        T.FFN_DOWN_EXP: HfName(f"{BLOCK}.mlp.experts.down_proj", bare=True),
    },
    fused=(KV_FUSED,),
    signature=(LLAMA_SIGNATURE[0], r"\.mlp\.experts\.gate_up_proj$"),
    hf_buffers=SKIP_ROTARY,
)

register(LLAMA, MISTRAL, MIXTRAL)
