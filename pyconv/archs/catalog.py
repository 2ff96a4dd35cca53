"""Lookups over a set of tables: the table a checkpoint's config.json or tensor names call for, or the
one that writes a GGUF architecture. ``pyconv.registry`` holds the catalog of every known family."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConversionError
from .arch import Arch

log = logging.getLogger("pyconv")


class Catalog:
    """Tables by name, in registration order."""

    def __init__(self, tables: dict[str, Arch]) -> None:
        self.tables = tables

    @property
    def supported(self) -> str:
        return ", ".join(sorted(self.tables))

    def named(self, name: str) -> Arch:
        """The table ``name`` (``--arch``)."""
        if name not in self.tables:
            raise ConversionError(f"unknown architecture '{name}' (supported: {self.supported})")
        return self.tables[name]

    def for_gguf(self, name: str) -> Arch | None:
        """The first table that writes GGUF architecture ``name`` (for some out type)."""
        return next((a for a in self.tables.values() if name in a.gguf.names), None)

    def guess(self, tensor_names: list[str]) -> Arch | None:
        """The family whose signature matches the names, the most specific one (most patterns). Two
        that match equally well are an error: which one is a choice only the user can make."""
        found = sorted((a for a in self.tables.values()
                        if a.signature and all(any(re.search(p, n) for n in tensor_names) for p in a.signature)),
                       key=lambda a: -len(a.signature))
        if len(found) > 1 and len(found[0].signature) == len(found[1].signature):
            ties = [a.name for a in found if len(a.signature) == len(found[0].signature)]
            raise ConversionError(f"the tensor names fit {' and '.join(ties)} equally well; pass --arch to choose")
        return found[0] if found else None

    def detect(self, config: Mapping[str, Any] | None, tensor_names: list[str], forced: str | None = None, *,
               guess_unknown: bool = False) -> Arch:
        """The table for a checkpoint: ``forced`` (--arch), else config.json's ``architectures`` or
        ``model_type``, else the tensor-name signature (with a warning naming what was assumed). A config
        naming an architecture pyconv does not know is an error unless ``guess_unknown``."""
        if forced:
            return self.named(forced)
        if config:
            for hf in config.get("architectures") or []:
                for a in self.tables.values():
                    if hf in a.hf_architectures:
                        return a
            model_type = config.get("model_type")
            for a in self.tables.values():
                if model_type in a.model_types:
                    return a
            known = config.get("architectures") or [model_type]
            if not guess_unknown:
                raise ConversionError(f"architecture {known} is not supported (supported: {self.supported}); "
                                      "pass --arch to force one")
        guessed = self.guess(tensor_names)
        if guessed is None:
            raise ConversionError(f"neither config.json nor the tensor names tell the architecture (supported: "
                                  f"{self.supported}); pass --arch")
        why = f"config.json names {known}, which pyconv does not know" if config else "there is no config.json"
        log.warning("%s; the tensor names look like '%s', assumed (pass --arch to choose)", why, guessed.name)
        return guessed
