"""Modeling code shipped inside Hugging Face exports of architectures transformers does not ship.

Each architecture has a folder whose modules load with ``trust_remote_code=True``. The HF target copies
exactly the files named here: transformers needs every module named in ``auto_map`` and every module they
reach by a literal relative import, and nothing else belongs in an export.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConversionError

__all__ = ["remote_code_files"]

_ROOT = Path(__file__).resolve().parent

_FILES: dict[str, tuple[str, ...]] = {
    "neobert": ("modeling_neobert.py", "rotary.py"),
    "nanomoe": ("configuration_nanomoe_gpt.py", "modeling_nanomoe_gpt.py", "manager.py"),
}


def remote_code_files(arch: str) -> list[Path]:
    """The modeling files an HF export of ``arch`` ships, in a fixed order."""
    names = _FILES.get(arch)
    if names is None:
        known = ", ".join(sorted(_FILES))
        raise ConversionError(f"[remote_code_files] no remote code for architecture {arch!r} (known: {known})")
    return [_ROOT / arch / name for name in names]
