"""pyconv's own model families, one package each: ``pyconv/families/<name>/`` gives ``FAMILY`` (a
``pyconv.family.Family``) with its tables and, where it has them, its reader, HF exporter, remote code
and checks. A new family is a new package here; nothing else names it.

pyconv's pyproject declares ``builtin`` as its ``pyconv.families`` entry point, so the built-in families
are found the way other packages' are.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..family import Family


def builtin() -> list[Family]:
    """Every package under pyconv/families, by name."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            found.append(importlib.import_module(f"{__name__}.{module.name}").FAMILY)
    return found
