"""``validate``: independent readers, statistics and a real runtime say whether an output is sound."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConversionError
from .report import Check, Report

__all__ = ["Check", "Report", "validate"]


def validate(path: str | Path, *, strict: bool = False, reference: str | Path | None = None,
             prompt: str = "The capital of France is", probe: bool = True) -> Report:
    """Validate a GGUF file (or split set) or a Hugging Face folder."""
    p = Path(path)
    ref = Path(reference) if reference is not None else None
    if p.is_file() and p.suffix == ".gguf":
        from .gguf import validate_gguf

        return validate_gguf(p, strict=strict, reference=ref, prompt=prompt, probe=probe)
    if p.is_dir():
        from .hf import validate_hf

        return validate_hf(p, reference=ref)
    raise ConversionError("validate reads .gguf files and Hugging Face folders", file=p)
