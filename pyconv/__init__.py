"""pyconv: a streaming, low-memory converter for transformer checkpoints.

``import pyconv`` stays light: torch and transformers are only imported by the parts that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConversionError

__version__ = "0.1.0"

__all__ = ["ConversionError", "__version__", "convert", "inspect"]

if TYPE_CHECKING:
    from .conversion import convert
    from .inspection import inspect


def __getattr__(name: str) -> Any:
    if name == "convert":
        from .conversion import convert

        return convert
    if name == "inspect":
        from .inspection import inspect

        return inspect
    raise AttributeError(f"module 'pyconv' has no attribute {name!r}")
