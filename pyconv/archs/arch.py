"""A family's table: everything pyconv knows about one architecture, as data.

The identity part says which checkpoints the table is for (Hugging Face classes, model types, the
tensor names that give it away, wrapper prefixes); one part per target says how the tensors become
that target's: ``gguf`` for llama.cpp, ``hf`` for Hugging Face folders (names of GGUF tensors back in
HF, ties, buffers), ``native`` for trainer checkpoints (the fused layout). Add a family by adding a
table; a family that follows Llama's module tree starts from ``llama_like``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .gguf_layout import GgufLayout
from .hf_layout import HfLayout
from .native_layout import NativeLayout
from .proof import Proof


@dataclass(frozen=True)
class Arch:
    name: str
    hf_architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    gguf: GgufLayout
    hf: HfLayout = field(default_factory=HfLayout)
    native: NativeLayout = field(default_factory=NativeLayout)
    # regexes that together recognise the family's tensor names when no config.json tells it
    signature: tuple[str, ...] = ()
    # task-head wrappers keep the base model under a prefix (BertForMaskedLM: "bert."); names are
    # looked up, skipped and split without it
    prefixes: tuple[str, ...] = ()
    # how the tests prove the table (``pyconv archs`` shows it)
    proof: Proof = field(default_factory=Proof)

    def base_name(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name
