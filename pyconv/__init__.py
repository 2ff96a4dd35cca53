"""pyconv: a streaming, low-memory converter for transformer checkpoints.

``import pyconv`` stays light: torch and transformers are only imported by the parts that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConversionError
from .version import __version__

__all__ = ["ConversionError", "__version__", "convert", "dequantize", "inspect", "quantize"]

if TYPE_CHECKING:
    from .conversion import convert
    from .inspection import inspect
    from .quants import dequantize, quantize


def __getattr__(name: str) -> Any:
    if name == "convert":
        from .conversion import convert

        return convert
    if name == "inspect":
        from .inspection import inspect

        return inspect
    if name in ("quantize", "dequantize"):
        from . import quants

        return getattr(quants, name)
    raise AttributeError(f"module 'pyconv' has no attribute {name!r}")
