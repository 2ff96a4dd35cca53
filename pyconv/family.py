"""A model family as one unit: what pyconv knows about it, whatever the direction.

A family's package under ``pyconv/families/`` (or another package's ``pyconv.families`` entry point)
gives one ``Family``: its architecture tables, and where it has them the readers of its trainers'
checkpoint layouts, the exporter of checkpoints transformers cannot load without the family's own
code, and the checks ``pyconv validate`` runs on its Hugging Face folders. ``pyconv.registry`` finds
every family and answers lookups over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archs.arch import Arch
from .options import ConvertOptions
from .sources.checkpoint import Checkpoint, Reader
from .targets.hf_model import HfTensors
from .validate.report import Report


@dataclass(frozen=True)
class HfExporter:
    """How a family's checkpoints become a ``trust_remote_code`` Hugging Face folder: the tensors,
    config.json (with an ``auto_map`` naming the shipped classes) and tokenizer, the modeling files,
    and the model card's usage section."""

    model_type: str                                            # config.json's, of the export
    recognises: Callable[[Checkpoint], bool]
    tensors: Callable[[Checkpoint, ConvertOptions], HfTensors]
    # the card's usage section from config.json and the folder's small files
    usage: Callable[[dict[str, Any], dict[str, bytes]], list[str]]
    remote_code: tuple[Path, ...] = ()                         # shipped beside the weights, in this order
    # what the tests compare the exported folders with (``pyconv archs`` shows it)
    proven: str = ""


@dataclass(frozen=True)
class ModelChecks:
    """What ``pyconv validate`` checks of a Hugging Face folder of ``model_types`` beyond what every folder
    gets: ``run(folder, model, token_ids, report)`` with the model transformers loaded."""

    model_types: tuple[str, ...]
    run: Callable[[Path, Any, Any, Report], None]


@dataclass(frozen=True)
class Family:
    name: str
    archs: tuple[Arch, ...] = ()
    # checkpoint layouts only this family's trainers write, asked before pyconv's generic formats
    readers: tuple[Reader, ...] = ()
    hf_exporter: HfExporter | None = None
    checks: ModelChecks | None = None
