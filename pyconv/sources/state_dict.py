"""Checkpoints of a PyTorch state dict: tensors under the module names the model gives them
(safetensors, torch files, DeepSpeed ZeRO, trainer layouts, and plugins' formats unless they say
otherwise). HF folders and trainer checkpoints take the tensors as they are; GGUF maps them through
the family's table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..archs.catalog import Catalog
from ..options import ConvertOptions
from ..plan import Plan
from ..targets.gguf import plan_gguf
from ..targets.hf_model import HfTensors
from ..targets.hf_tensors import from_hf_source
from .checkpoint import Checkpoint


@dataclass
class StateDictCheckpoint(Checkpoint):
    def hf_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        return from_hf_source(self, catalog, forced)

    def trainer_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        return from_hf_source(self, catalog, forced, need_arch=True)

    def plan_gguf(self, out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
        return plan_gguf(self, out, opts, catalog)
