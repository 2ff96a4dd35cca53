"""What every reader gives: a checkpoint, one subclass per format, and the reader type plugins register.

A checkpoint holds its tensors as byte segments of files (never loaded) and the small things around
them. What a target needs that differs by format is a method here, so that targets never ask which
format they hold: most formats hold a PyTorch state dict under the model's own names
(``state_dict.StateDictCheckpoint``); a GGUF file holds llama.cpp's names and layout and its own
config and tokenizer (``gguf_checkpoint.GgufCheckpoint``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ..archs.catalog import Catalog
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import Plan
from ..targets.hf_model import HfTensors
from .base import SourceTensor


@dataclass
class Checkpoint(ABC):
    """A source opened for conversion: its tensors in source order plus the small things around them."""

    format_name: ClassVar[str]                  # how inspect and the model card name the format
    path: Path                                  # what the user named
    tensors: dict[str, SourceTensor]
    files: list[Path]                           # every weight file read
    metadata: dict[str, str] = field(default_factory=dict)   # e.g. safetensors __metadata__
    config: dict[str, Any] | None = None        # config.json when there is one
    # where config.json and the tokenizer are when not beside the weights (a ZeRO tag folder's parent)
    side_folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The folder of the small files around the weights: config, tokenizer, generation config."""
        if self.side_folder is not None:
            return self.side_folder
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def model_folder(self) -> Path | None:
        """The folder whose small files (config.json, tokenizer, generation config, sentence-transformers
        modules) describe this model; None when the weights file describes itself."""
        return self.folder

    @property
    def embedded_tokenizer(self) -> Path | None:
        """The file whose metadata holds the model's tokenizer, when the weights carry it."""
        return None

    @property
    def training_step(self) -> int:
        """The training step the checkpoint was saved at, where the format records one; else 0."""
        return 0

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def tensor_bytes_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.dtype] = out.get(t.dtype, 0) + t.nbytes
        return out

    def details(self) -> dict[str, Any]:
        """What the reader found beside the tensors, as ``inspect`` shows it."""
        return {}

    def strip_prefixes(self, prefixes: tuple[str, ...]) -> None:
        """Tensor names without wrapper prefixes (torch.compile's ``_orig_mod.``, DDP's ``module.``),
        removed from the start of a name as long as one matches."""
        if not prefixes:
            return
        renamed: dict[str, SourceTensor] = {}
        was: dict[str, str] = {}
        for name, t in self.tensors.items():
            new = name
            while match := next((p for p in prefixes if p and new.startswith(p)), None):
                new = new[len(match):]
            if not new:
                raise ConversionError("stripping prefixes leaves an empty name", file=self.path, tensor=name)
            if new in renamed:
                raise ConversionError(f"'{was[new]}' and '{name}' both become '{new}' once prefixes are stripped",
                                      file=self.path)
            renamed[new] = t if new == name else replace(t, name=new)
            was[new] = name
        self.tensors = renamed

    @abstractmethod
    def hf_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        """The model under Hugging Face names and layout, for an HF folder (``forced``: ``--arch``)."""

    @abstractmethod
    def trainer_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        """The model under Hugging Face names with the family's table, for a trainer checkpoint."""

    @abstractmethod
    def plan_gguf(self, out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
        """The plan of a GGUF file (or split set) ``out`` of this checkpoint."""


@dataclass(frozen=True)
class Reader:
    """A checkpoint format: whether a path holds one, how to open it, and, for trainer layouts that fix
    where their exports go, the default output of a path."""

    name: str
    recognises: Callable[[Path], bool]
    open: Callable[[Path, ConvertOptions], Checkpoint]
    default_output: Callable[[Path], Path] | None = None
