"""What a target needs to write a Hugging Face model, whatever the source was."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..archs.arch import Arch
from ..plan import OutTensor


@dataclass
class HfTensors:
    """Recipes in order under HF names, the family (None when the config names one pyconv has no table
    for) and config.json as it must be written."""

    tensors: list[OutTensor]
    arch: Arch | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # files shipped beside the weights as they are (the modeling code of trust_remote_code folders)
    files: dict[str, bytes] = field(default_factory=dict)
    # tokenizer files the family prepared itself; None: those beside the weights, normalized
    tokenizer: dict[str, bytes] | None = None
