"""Lookups over a set of tables: the table a checkpoint's config.json or tensor names call for, or the
one that writes a GGUF architecture. ``pyconv.registry`` holds the catalog of every known family."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConversionError
from .arch import Arch

log = logging.getLogger("pyconv")


class Catalog:
    """Tables by name, in registration order. ``extend`` says how another package adds a family, for the errors
    about unknown ones."""

    def __init__(self, tables: dict[str, Arch], extend: str = "") -> None:
        self.tables = tables
        self.extend = extend

    @property
    def supported(self) -> str:
        return ", ".join(sorted(self.tables))

    def closest(self, *names: str) -> Arch | None:
        """The table whose name, model type or HF class reads most like one of ``names``."""
        spellings = {s.lower(): a for a in self.tables.values() for s in (a.name, *a.model_types, *a.hf_architectures)}
        scored = [(difflib.SequenceMatcher(None, n.lower(), s).ratio(), s) for n in names if n for s in spellings]
        return spellings[max(scored)[1]] if scored else None

    def unknown(self, what: str, *names: str, way_out: str = "") -> ConversionError:
        """The error for ``what`` no table takes: the closest table, the list of them, the ways on."""
        near = self.closest(*names)
        hint = f"; the closest pyconv has is '{near.name}' ({', '.join(near.hf_architectures)})" if near else ""
        ways = "".join(f"; {w}" for w in (self.extend, way_out) if w)
        return ConversionError(f"{what} is not supported{hint}; `pyconv archs` lists all{ways}")

    def named(self, name: str) -> Arch:
        """The table ``name`` (``--arch``)."""
        if name not in self.tables:
            raise self.unknown(f"--arch {name}", name)
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
                classes = [str(n) for n in config.get("architectures") or []]
                raise self.unknown(f"architecture {known}" + (f" (model_type '{model_type}')" if classes and model_type else ""),
                                   *classes, str(model_type or ""), way_out="pass --arch to force one")
        guessed = self.guess(tensor_names)
        if guessed is None:
            raise ConversionError(f"neither config.json nor the tensor names tell the architecture (supported: "
                                  f"{self.supported}); pass --arch")
        why = f"config.json names {known}, which pyconv does not know" if config else "there is no config.json"
        log.warning("%s; the tensor names look like '%s', assumed (pass --arch to choose)", why, guessed.name)
        return guessed
