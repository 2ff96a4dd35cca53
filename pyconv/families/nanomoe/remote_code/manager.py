"""Tracking of the MoE routers' auxiliary losses over one forward pass.

Each router adds its layer's losses while the model trains; the model reads the per-name sums once the pass
is over and clears them before the next one. One tracker belongs to one model instance, so two models in one
process never mix their losses.
"""

from __future__ import annotations

import torch


class MoELossTracker:
    def __init__(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        self._values.setdefault(name, []).append(value)

    def reset(self) -> None:
        self._values.clear()

    def totals(self) -> dict[str, torch.Tensor]:
        """The sum over layers of each loss recorded since the last reset."""
        return {name: torch.stack(values).sum() for name, values in self._values.items()}
