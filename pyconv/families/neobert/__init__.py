"""NeoBERT: its trainer's checkpoint folders (``reader.py``), the ``trust_remote_code`` HF export
(``hf_export.py`` with the modeling code in ``remote_code/``), llama.cpp's ``neo-bert`` table
(``table.py``) and the checks of its HF folders (``checks.py``)."""

from __future__ import annotations

from pathlib import Path

from ...family import Family, HfExporter, ModelChecks
from ...sources.checkpoint import Reader
from . import reader
from .checks import neobert_checks
from .hf_export import neobert_tensors, neobert_usage, recognises
from .model import MODEL_TYPE
from .table import NEOBERT

# transformers needs every module auto_map names and every module those import by a literal relative import
REMOTE_CODE = tuple(Path(__file__).parent / "remote_code" / name for name in ("modeling_neobert.py", "rotary.py"))

FAMILY = Family(
    "neobert",
    archs=(NEOBERT,),
    readers=(Reader("neobert", reader.recognises, reader.open_neobert_trainer, reader.default_output),),
    hf_exporter=HfExporter(MODEL_TYPE, recognises, neobert_tensors, neobert_usage, REMOTE_CODE,
                           proven="the training forward's hidden states, in a fresh process"),
    checks=ModelChecks((MODEL_TYPE,), neobert_checks),
)
