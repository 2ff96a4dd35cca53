"""What the mixture-of-experts families on Llama's tree share: transformers 5 keeps each layer's experts fused
in memory (``mlp.experts.gate_up_proj`` [expert, 2 * ffn, embd], gate rows first, and ``mlp.experts.down_proj``
[expert, embd, ffn], already llama.cpp's ``ffn_down_exps``), but saves them one module per expert
(``mlp.experts.{e}.gate_proj``), as the original checkpoints hold them; the router is ``mlp.gate`` and the
expert width ``moe_intermediate_size``."""

from __future__ import annotations

import gguf

from .gguf_layout import ExpertStack, Split
from .hf_layout import HfName
from .hparams import HParam
from .llama_like import BLOCK, LLAMA_HF_NAMES, LLAMA_HPARAMS, T

# each expert's projections stacked into llama.cpp's 3-d tensors
EXPERTS_STACK = ExpertStack(
    pattern=r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$",
    parts={"gate_proj": T.FFN_GATE_EXP, "up_proj": T.FFN_UP_EXP, "down_proj": T.FFN_DOWN_EXP},
    count_fields=("num_experts", "num_local_experts"),
)
# the fused gate‖up projection cut into llama.cpp's two stacked tensors
EXPERTS_SPLIT = Split(r"^model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj$", 1, (T.FFN_GATE_EXP, T.FFN_UP_EXP))

MOE_HF_NAMES: dict[gguf.MODEL_TENSOR, HfName] = {
    **{k: v for k, v in LLAMA_HF_NAMES.items() if k not in (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)},
    T.FFN_GATE_INP: HfName(f"{BLOCK}.mlp.gate"),
    T.FFN_GATE_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=0, of=2, bare=True),
    T.FFN_UP_EXP: HfName(f"{BLOCK}.mlp.experts.gate_up_proj", dim=1, part=1, of=2, bare=True),
    T.FFN_DOWN_EXP: HfName(f"{BLOCK}.mlp.experts.down_proj", bare=True),
}

# Llama's hyper-parameters with the expert count read back into ``num_experts``, the field the original checkpoints
# name it (transformers 5 saves some as ``num_local_experts`` and reads either)
MOE_HPARAMS = (*(h for h in LLAMA_HPARAMS if h.method != "add_expert_count"),
               HParam("add_expert_count", ("num_experts", "num_local_experts")),
               # the graphs fix it, but the config going back needs it
               HParam("add_expert_weights_norm", ("norm_topk_prob",), required=False))
# the experts' width, where it differs from a dense layer's ``intermediate_size``
EXPERT_WIDTH = HParam("add_expert_feed_forward_length", ("moe_intermediate_size",))
MOE_SIGNATURE = (r"^model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"\.mlp\.experts\.gate_up_proj$")
