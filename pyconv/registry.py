"""Every model family pyconv knows, loaded once, and the lookups over them: the architecture tables, the
readers of trainer layouts, the HF exporter for a checkpoint and the checks for a model type.

Families come from the ``pyconv.families`` entry points: pyconv's own first (its one entry point walks
``pyconv/families``; from a source tree without pyconv's installed metadata, the same function is called
directly), then other packages', by entry point name. Tables from ``pyconv.archs`` entry points follow.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint

from . import plugins
from .archs.arch import Arch
from .archs.catalog import Catalog
from .errors import ConversionError
from .families import builtin
from .family import Family, HfExporter, ModelChecks
from .sources.checkpoint import Checkpoint, Reader


@functools.cache
def _loaded() -> tuple[tuple[Family, EntryPoint | None], ...]:
    """pyconv's families, then other packages', each name once, with the entry point of those that are plugins."""
    entries = plugins.group(plugins.FAMILY_GROUP)
    own = [family for ep in entries if plugins.is_own(ep) for family in plugins.families_of(ep)]
    found: dict[str, tuple[Family, EntryPoint | None]] = {f.name: (f, None) for f in own or builtin()}
    for ep in entries:
        if plugins.is_own(ep):
            continue
        for family in plugins.families_of(ep):
            if family.name in found:
                raise ConversionError(f"{plugins.describe(ep)} names its family '{family.name}', which pyconv already has")
            found[family.name] = (plugins.guarded_family(ep, family), ep)
    return tuple(found.values())


def families() -> tuple[Family, ...]:
    return tuple(family for family, _ep in _loaded())


@functools.cache
def catalog() -> Catalog:
    """Every table: the families', then the ``pyconv.archs`` plugins'."""
    tables: dict[str, Arch] = {}
    for family, ep in _loaded():
        for table in family.archs:
            plugins.register_table(tables, table, ep)
    for ep, table in plugins.arch_tables():
        plugins.register_table(tables, table, ep)
    return Catalog(tables)


@functools.cache
def readers() -> tuple[Reader, ...]:
    """Readers asked before pyconv's own formats: other packages' formats, then the families' trainer layouts."""
    return (*plugins.readers(), *(reader for family in families() for reader in family.readers))


def hf_exporter(ck: Checkpoint) -> HfExporter | None:
    """The exporter of the family whose checkpoint ``ck`` is, when it needs its own export."""
    return next((f.hf_exporter for f in families() if f.hf_exporter and f.hf_exporter.recognises(ck)), None)


def hf_exporter_of(model_type: str | None) -> HfExporter | None:
    """The exporter whose exports have ``model_type``."""
    return next((f.hf_exporter for f in families() if f.hf_exporter and f.hf_exporter.model_type == model_type), None)


def model_checks(model_type: str | None) -> ModelChecks | None:
    """The checks ``pyconv validate`` runs on folders of ``model_type`` beyond every folder's."""
    return next((f.checks for f in families() if f.checks and model_type in f.checks.model_types), None)
