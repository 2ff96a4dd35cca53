"""nanoMoE (askerlee/nanoMoE): its training checkpoints (``ckpt.pt``, read by the torch reader, or
``save_pretrained`` folders) as ``trust_remote_code`` HF folders (``hf_export.py`` with the modeling code
in ``remote_code/``), and the checks of those folders (``checks.py``). llama.cpp has no graph for it."""

from __future__ import annotations

from pathlib import Path

from ...family import Family, HfExporter, ModelChecks
from .checks import nanomoe_checks
from .hf_export import nanomoe_tensors, nanomoe_usage, recognises
from .model import MODEL_TYPE

# transformers needs every module auto_map names and every module those import by a literal relative import
REMOTE_CODE = tuple(Path(__file__).parent / "remote_code" / name
                    for name in ("configuration_nanomoe_gpt.py", "modeling_nanomoe_gpt.py", "manager.py"))

FAMILY = Family(
    "nanomoe",
    hf_exporter=HfExporter(MODEL_TYPE, recognises, nanomoe_tensors, nanomoe_usage, REMOTE_CODE,
                           proven="the nanoMoE forward of the same weights, in a fresh process"),
    checks=ModelChecks((MODEL_TYPE,), nanomoe_checks),
)
