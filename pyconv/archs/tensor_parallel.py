"""How tensor-parallel trainers cut each tensor of the fused layout across ranks (Megatron's rules).

Column-parallel layers (q/kv, gate/up projections, vocabulary-parallel embedding and head) hold a slice
of the output rows, dim 0, biases included; row-parallel layers (o and down projections) a slice of
the input columns, dim 1, their biases whole on every rank; norms and everything else are replicated.
A fused projection is cut part by part: rank r holds [k_r; v_r], not a slice of [k; v].
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sharding:
    dim: int | None  # None: every rank holds the whole tensor
    parts: int = 1   # equal parts of dim that are each cut across the ranks

    @property
    def describe(self) -> str:
        if self.dim is None:
            return "replicated"
        return f"dim {self.dim}" + (f", {self.parts} parts each cut" if self.parts > 1 else "")


REPLICATED = Sharding(None)

TP_RULES: tuple[tuple[str, Sharding], ...] = (
    (r"\.experts\.gate_up_proj$", Sharding(1, 2)),                     # [expert, gate‖up, embd]
    (r"\.experts\.down_proj$", Sharding(2)),                           # [expert, embd, ffn]
    (r"\.(kv_proj|gate_up_proj)\.(weight|bias)$", Sharding(0, 2)),
    (r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.(weight|bias)$", Sharding(0)),
    (r"\.(o_proj|down_proj)\.weight$", Sharding(1)),
    (r"(^|\.)(embed_tokens|wte|lm_head)\.weight$", Sharding(0)),
)


def sharding(name: str) -> Sharding:
    return next((s for pattern, s in TP_RULES if re.search(pattern, name)), REPLICATED)
