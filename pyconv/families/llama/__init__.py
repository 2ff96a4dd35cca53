"""LLaMA, Mistral and Mixtral: llama.cpp's ``llama`` architecture with permuted Q/K rows."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import ExpertStack, GgufLayout, Split
from ...archs.hf_layout import HfLayout, HfName
from ...archs.llama_like import (
    BLOCK,
    KV_FUSED,
    LLAMA_HF_NAMES,
    LLAMA_HPARAMS,
    LLAMA_SIGNATURE,
    SKIP_ROTARY,
    T,
    llama_like,
)
from ...archs.native_layout import NativeLayout
from ...archs.proof import (
    BACK_TO_HF_TESTS,
    LOGITS_TESTS,
    SAME_AS_SOURCE,
    SAME_AS_SOURCE_AND_LOADER,
    Proof,
)
from ...family import Family

LLAMA_GGUF = GgufLayout(gguf.MODEL_ARCH.LLAMA, LLAMA_HPARAMS, permute_qk=True, skip=SKIP_ROTARY)

LLAMA = llama_like("llama", ("LlamaForCausalLM", "LLaMAForCausalLM"), LLAMA_GGUF, signature=LLAMA_SIGNATURE,
                   proof=Proof(("f32", "f16"), to_hf=SAME_AS_SOURCE_AND_LOADER, tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)))

MISTRAL = llama_like("mistral", "MistralForCausalLM", LLAMA_GGUF, proof=Proof(("f32",), tests=(LOGITS_TESTS,)))

MIXTRAL = llama_like(
    "mixtral", "MixtralForCausalLM",
    GgufLayout(
        gguf.MODEL_ARCH.LLAMA, LLAMA_HPARAMS, permute_qk=True, skip=SKIP_ROTARY,
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
    ),
    hf=HfLayout({
        **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)},
        T.FFN_GATE_INP: HfName(f"{BLOCK}.mlp.gate"),
        T.FFN_GATE_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=0, of=2, bare=True),
        T.FFN_UP_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=1, of=2, bare=True),
        T.FFN_DOWN_EXP: HfName(f"{BLOCK}.mlp.experts.down_proj", bare=True),
    }, buffers=SKIP_ROTARY),
    native=NativeLayout((KV_FUSED,)),
    signature=(LLAMA_SIGNATURE[0], r"\.mlp\.experts\.gate_up_proj$"),
    proof=Proof(("f32", "f16"), to_hf=SAME_AS_SOURCE, tests=(LOGITS_TESTS, BACK_TO_HF_TESTS)),
)

FAMILY = Family("llama", (LLAMA, MISTRAL, MIXTRAL))
