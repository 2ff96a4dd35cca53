"""The Hugging Face part of a family's table: the HF name of each GGUF tensor kind (GGUF → HF), and
what transformers 5 expects of ties and buffers. HF names are templates with {bid} for the layer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import gguf


def template_pattern(template: str) -> re.Pattern[str]:
    """Matches the .weight/.bias tensors of a {bid} template; groups ``bid`` and ``suffix``."""
    return re.compile("^" + re.escape(template).replace(r"\{bid\}", r"(?P<bid>\d+)") + r"(?P<suffix>\.weight|\.bias)$")


@dataclass(frozen=True)
class HfName:
    """The HF tensor a GGUF tensor kind becomes: ``template`` ({bid} the block; the GGUF name's .weight
    or .bias follows unless ``bare``, a plain parameter), or part ``part`` of ``of`` equal parts along
    ``dim`` of it (transformers 5 keeps some experts fused)."""

    template: str
    dim: int = 0
    part: int = 0
    of: int = 1
    bare: bool = False


@dataclass(frozen=True)
class TensorFlag:
    """A config setting a GGUF file tells by its tensors alone: ``field`` is ``present`` when a tensor name matches
    ``pattern``, the opposite otherwise."""

    field: str
    pattern: str
    present: bool = True


@dataclass(frozen=True)
class HfLayout:
    # HF name of each GGUF tensor kind (GGUF → HF); empty: transformers cannot take the family from GGUF
    names: Mapping[gguf.MODEL_TENSOR, HfName] = field(default_factory=dict)
    # the config class's tie_word_embeddings default, for configs that leave it out
    tied_default: bool = False
    # buffers older checkpoints saved that transformers 5 no longer loads (regexes)
    buffers: tuple[str, ...] = ()
    # config settings read back from which tensors a GGUF holds
    flags: tuple[TensorFlag, ...] = ()

    @property
    def tie_names(self) -> tuple[str, str] | None:
        """(embedding, output head) weight names, which ``tie_word_embeddings`` ties."""
        embed, head = self.names.get(gguf.MODEL_TENSOR.TOKEN_EMBD), self.names.get(gguf.MODEL_TENSOR.OUTPUT)
        return (f"{embed.template}.weight", f"{head.template}.weight") if embed and head else None
