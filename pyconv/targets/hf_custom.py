"""HF folders for architectures transformers does not ship (``trust_remote_code=True`` folders).

A family here maps its trainer's checkpoint to the tensors, config.json (with an ``auto_map`` naming our
classes) and tokenizer of the export, ships its modeling code from ``pyconv/remote_code/<family>`` and
writes the model card's usage section. ``plan_hf`` asks these families first; every other checkpoint
takes the generic path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..options import ConvertOptions
from ..remote_code import remote_code_files
from ..sources.base import Checkpoint
from .hf_tensors import HfTensors


@dataclass(frozen=True)
class Family:
    remote_code: str                                           # folder under pyconv/remote_code
    model_type: str                                            # config.json's, for the model card
    recognises: Callable[[Checkpoint], bool]
    tensors: Callable[[Checkpoint, ConvertOptions], HfTensors]
    # the card's usage section from config.json and the folder's small files
    usage: Callable[[dict[str, Any], dict[str, bytes]], list[str]]


def families() -> list[Family]:
    from .hf_nanomoe import NANOMOE
    from .hf_neobert import NEOBERT

    return [NEOBERT, NANOMOE]


def custom_tensors(ck: Checkpoint, opts: ConvertOptions) -> HfTensors | None:
    """The export of a custom family's checkpoint, its modeling code included; None for any other."""
    family = next((f for f in families() if f.recognises(ck)), None)
    if family is None:
        return None
    ht = family.tensors(ck, opts)
    ht.files.update({path.name: path.read_bytes() for path in remote_code_files(family.remote_code)})
    return ht


def custom_usage(config: dict[str, Any], files: dict[str, bytes]) -> list[str] | None:
    family = next((f for f in families() if f.model_type == config.get("model_type")), None)
    return None if family is None else family.usage(config, files)
