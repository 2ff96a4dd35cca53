"""ERNIE 4.5 MoE: the dense ERNIE 4.5 attention (interleaved rotary, which llama.cpp's ``ernie4_5-moe`` graph
rotates as HF stores them) with dense layers before ``moe_layer_start_index`` and every ``moe_layer_interval``-th
layer after it routed (softmax, top-k renormalised, the choice biased by ``moe_statics.e_score_correction_bias``)
plus ``moe_num_shared_experts`` shared experts held as one MLP that many times as wide as an expert."""

from __future__ import annotations

from typing import Any

import gguf

from ...archs.config import Config
from ...archs.gguf_layout import ExpertStack, GgufLayout
from ...archs.hf_layout import HfLayout, HfName
from ...archs.hparams import HParam
from ...archs.llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_HPARAMS, SKIP_ROTARY, T, llama_like
from ...archs.moe_like import EXPERTS_SPLIT, MOE_HF_NAMES, MOE_SIGNATURE
from ...archs.native_layout import NativeLayout
from ...archs.proof import FAMILY_TESTS, LOADS_BACK, Proof
from ...family import Family

SHARED = f"{BLOCK}.mlp.shared_experts"


def shared_width(cfg: Config) -> int:
    return int(cfg.require("moe_intermediate_size")) * int(cfg.find("moe_num_shared_experts") or 0)


def shared_count(width: Any, config: dict[str, Any]) -> dict[str, Any]:
    return {"moe_num_shared_experts": int(width) // int(config["moe_intermediate_size"])}


ERNIE4_5_MOE_HPARAMS = (
    *(h for h in LLAMA_HPARAMS if h.method not in ("add_expert_count", "add_expert_used_count")),
    HParam("add_expert_count", ("moe_num_experts",)),
    HParam("add_expert_used_count", ("moe_k",)),
    HParam("add_expert_feed_forward_length", ("moe_intermediate_size",)),
    HParam("add_expert_shared_feed_forward_length", derive=shared_width, back=shared_count),
    HParam("add_leading_dense_block_count", ("moe_layer_start_index",)),
    HParam("add_interleave_moe_layer_step", ("moe_layer_interval",)),
)

ERNIE4_5_MOE = llama_like(
    "ernie4_5_moe", "Ernie4_5_MoeForCausalLM",
    GgufLayout(gguf.MODEL_ARCH.ERNIE4_5_MOE, ERNIE4_5_MOE_HPARAMS, skip=SKIP_ROTARY,
               experts=ExpertStack(
                   pattern=r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$",
                   parts={"gate_proj": T.FFN_GATE_EXP, "up_proj": T.FFN_UP_EXP, "down_proj": T.FFN_DOWN_EXP},
                   count_fields=("moe_num_experts",)),
               splits=(EXPERTS_SPLIT,)),
    hf=HfLayout({
        **LLAMA_HF_NAMES, **MOE_HF_NAMES,
        T.FFN_GATE_SHEXP: HfName(f"{SHARED}.gate_proj"), T.FFN_UP_SHEXP: HfName(f"{SHARED}.up_proj"),
        T.FFN_DOWN_SHEXP: HfName(f"{SHARED}.down_proj"),
        T.FFN_EXP_PROBS_B: HfName(f"{BLOCK}.mlp.moe_statics.e_score_correction_bias", bare=True),
    }, buffers=SKIP_ROTARY),
    native=NativeLayout(()),
    signature=(*MOE_SIGNATURE, r"\.mlp\.moe_statics\.e_score_correction_bias$"),
    proof=Proof(("f32", "f16", "q8_0"), to_hf=LOADS_BACK, tests=(FAMILY_TESTS,)),
)

FAMILY = Family("ernie4_5_moe", (ERNIE4_5_MOE,))
