"""LLaMA, Mistral and Mixtral: llama.cpp's ``llama`` architecture with permuted Q/K rows."""

from __future__ import annotations

import gguf

from .base import COMMON_HPARAMS, Arch, ExpertStack, HParam, Split, head_dim, register

LLAMA_HPARAMS = (
    *COMMON_HPARAMS,
    HParam("add_vocab_size", ("vocab_size",)),
    HParam("add_rope_dimension_count", derive=head_dim),
)

SKIP_ROTARY = (r"\.rotary_emb\.inv_freq$",)

LLAMA = Arch(
    name="llama",
    hf_architectures=("LlamaForCausalLM", "LLaMAForCausalLM"),
    model_types=("llama",),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    hparams=LLAMA_HPARAMS,
    permute_qk=True,
    skip=SKIP_ROTARY,
)

MISTRAL = Arch(
    name="mistral",
    hf_architectures=("MistralForCausalLM",),
    model_types=("mistral",),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    hparams=LLAMA_HPARAMS,
    permute_qk=True,
    skip=SKIP_ROTARY,
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
)

register(LLAMA, MISTRAL, MIXTRAL)
