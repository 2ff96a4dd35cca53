"""Granite-MoE: Granite's scalars and Llama's rotary (Q/K rows permuted) with routed experts kept fused as
checkpoints save them: ``block_sparse_moe.input_linear`` [expert, 2 * ffn, embd] (gate rows first, cut into
llama.cpp's ``ffn_gate_exps`` and ``ffn_up_exps``), ``output_linear`` (already ``ffn_down_exps``) and the router
``router.layer``. The experts are ``intermediate_size`` wide."""

from __future__ import annotations

import gguf

from ...archs.gguf_layout import GgufLayout, Split
from ...archs.hf_layout import HfLayout, HfName
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_HPARAMS, SKIP_ROTARY, T, llama_like
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family
from ..granite import GRANITE_SCALES

MOE = f"{BLOCK}.block_sparse_moe"

GRANITEMOE = llama_like(
    "granitemoe", "GraniteMoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.GRANITE_MOE, (*LLAMA_HPARAMS, *GRANITE_SCALES), permute_qk=True, skip=SKIP_ROTARY,
               splits=(Split(r"^model\.layers\.(\d+)\.block_sparse_moe\.input_linear\.weight$", 1,
                             (T.FFN_GATE_EXP, T.FFN_UP_EXP)),)),
    hf=HfLayout({
        **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)},
        T.FFN_GATE_INP: HfName(f"{MOE}.router.layer"),
        T.FFN_GATE_EXP: HfName(f"{MOE}.input_linear", dim=1, part=0, of=2),
        T.FFN_UP_EXP: HfName(f"{MOE}.input_linear", dim=1, part=1, of=2),
        T.FFN_DOWN_EXP: HfName(f"{MOE}.output_linear"),
    }, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=(r"^model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"\.block_sparse_moe\.input_linear\.weight$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("granitemoe", (GRANITEMOE,))
