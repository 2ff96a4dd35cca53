"""Every model family and source format pyconv knows, loaded once, and the lookups over them: the
architecture tables, the readers in the order they are asked, the HF exporter for a checkpoint and the
checks for a model type.

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
from .sources import dcp, gguf_checkpoint, lora, native, safetensors, torch_pickle, zero
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
    """Every family, pyconv's first."""
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
    return Catalog(tables, f"another package adds one through the '{plugins.FAMILY_GROUP}' entry point")


# pyconv's own formats. A DeepSpeed folder holds .pt files too, so ZeRO is asked before torch; and before
# safetensors, because HF Trainer keeps its model.safetensors beside the DeepSpeed checkpoint, and at stage 3
# without gathering that file holds empty placeholders while the DeepSpeed checkpoint holds the weights. A DCP
# folder is known by its .metadata alone. A LoRA adapter's
# folder holds a safetensors or torch file, so it is asked first.
FORMATS: tuple[Reader, ...] = (
    Reader("lora", lora.recognises, lora.open_adapter),
    Reader("native", native.recognises, lambda path, _opts: native.open_native(path, catalog())),
    Reader("zero", zero.recognises, zero.open_zero),
    Reader("safetensors", safetensors.recognises, lambda path, _opts: safetensors.open_safetensors(path)),
    Reader("gguf", gguf_checkpoint.recognises, lambda path, _opts: gguf_checkpoint.open_gguf(path)),
    Reader("dcp", dcp.recognises, dcp.open_dcp),
    Reader("torch", torch_pickle.recognises, torch_pickle.open_torch),
)


@functools.cache
def readers() -> tuple[Reader, ...]:
    """Every reader, in the order they are asked: other packages' formats, then the families' trainer
    layouts, then pyconv's own formats. A plugin's format or a trainer's folder holds files a generic
    format would misread (a step folder's safetensors only make sense merged and regrouped, or with the
    run's config.yaml), so those come first."""
    return (*plugins.readers(), *(reader for family in families() for reader in family.readers), *FORMATS)


def hf_exporter(ck: Checkpoint) -> HfExporter | None:
    """The exporter of the family whose checkpoint ``ck`` is, when it needs its own export."""
    return next((f.hf_exporter for f in families() if f.hf_exporter and f.hf_exporter.recognises(ck)), None)


def hf_exporter_of(model_type: str | None) -> HfExporter | None:
    """The exporter whose exports have ``model_type``."""
    return next((f.hf_exporter for f in families() if f.hf_exporter and f.hf_exporter.model_type == model_type), None)


def model_checks(model_type: str | None) -> ModelChecks | None:
    """The checks ``pyconv validate`` runs on folders of ``model_type`` beyond every folder's."""
    return next((f.checks for f in families() if f.checks and model_type in f.checks.model_types), None)
