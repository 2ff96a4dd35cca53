"""Families, architecture tables and source readers from other packages, found through entry points.

A package adds them in its pyproject.toml::

    [project.entry-points."pyconv.families"]
    myfamily = "my_package:FAMILY"             # a pyconv.family.Family, a list of them, or a function giving them

    [project.entry-points."pyconv.archs"]
    mymodel = "my_package.tables:MYMODEL"      # a pyconv.archs.Arch, or a list or tuple of them

    [project.entry-points."pyconv.sources"]
    myformat = "my_package.reader:READER"      # a pyconv.sources.Reader(name, recognises, open)

pyconv's own families come through the first group too (``pyconv.families:builtin``). Other packages'
tables are registered after pyconv's own, so a plugin adds families but cannot take over a class pyconv
knows (``--arch`` still chooses it). Readers are asked before pyconv's own, as trainer layouts are: a
plugin's format usually holds files pyconv would otherwise misread. A plugin that cannot be imported,
gives something else, reuses a name, fails with anything but a ConversionError or points at bytes its
files do not have is an error naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeVar

from .archs.arch import Arch
from .errors import ConversionError
from .family import Family, HfExporter, ModelChecks
from .options import ConvertOptions
from .sources.checkpoint import Checkpoint, Reader
from .targets.hf_model import HfTensors
from .validate.report import Report

FAMILY_GROUP = "pyconv.families"
ARCH_GROUP = "pyconv.archs"
SOURCE_GROUP = "pyconv.sources"
# the distribution whose pyconv.families entry point gives the built-in families
OWN_DISTRIBUTION = "pyconv"
T = TypeVar("T")


def describe(ep: EntryPoint) -> str:
    """How errors name a plugin: its entry point and the package that declares it."""
    package = f", package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"plugin '{ep.name}' ({ep.group} = {ep.value}{package})"


def _load(ep: EntryPoint) -> Any:
    try:
        return ep.load()
    except Exception as e:  # whatever importing someone else's module raises
        raise ConversionError(f"{describe(ep)} cannot be loaded: {type(e).__name__}: {e}") from None


def group(name: str) -> list[EntryPoint]:
    """The entry points of group ``name``, in a fixed order."""
    return sorted(entry_points(group=name), key=lambda ep: (ep.name, ep.value))


def is_own(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION


def _run(ep: EntryPoint, what: str, file: Path | None, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``; anything but a ConversionError it raises is reported as the plugin's bug."""
    try:
        return call(*args)
    except ConversionError:
        raise
    except Exception as e:  # a plugin's bug, reported as the plugin's
        raise ConversionError(f"{describe(ep)} failed to {what} it: {type(e).__name__}: {e}", file=file) from None


def _guarded(ep: EntryPoint, call: Callable[..., T], what: str) -> Callable[..., T]:
    def run(path: Path, *args: Any) -> T:
        return _run(ep, what, path, call, path, *args)
    return run


def _checked(ep: EntryPoint, open_: Callable[[Path, ConvertOptions], Any]) -> Callable[[Path, ConvertOptions], Checkpoint]:
    """``open_`` whose checkpoint is checked before the engine trusts it: every segment inside its file."""

    def run(path: Path, opts: ConvertOptions) -> Checkpoint:
        ck = open_(path, opts)
        if not isinstance(ck, Checkpoint):
            raise ConversionError(f"{describe(ep)} gives a {type(ck).__name__} for it, not a Checkpoint", file=path)
        sizes: dict[Path, int] = {}
        for t in ck.tensors.values():
            for s in t.segments:
                if s.path not in sizes:
                    sizes[s.path] = s.path.stat().st_size if s.path.is_file() else -1
                if s.offset < 0 or s.nbytes < 0 or s.offset + s.nbytes > sizes[s.path]:
                    raise ConversionError(f"{describe(ep)} places it at bytes [{s.offset}, {s.offset + s.nbytes}) of "
                                          f"{s.path}, which has {max(sizes[s.path], 0)}", file=path, tensor=t.name)
        return ck
    return run


def guarded_reader(ep: EntryPoint, reader: Reader) -> Reader:
    """``reader`` wrapped so that what goes wrong in it is named as the plugin's."""
    return Reader(reader.name, _guarded(ep, reader.recognises, "tell whether it can read"),
                  _guarded(ep, _checked(ep, reader.open), "read"),
                  _guarded(ep, reader.default_output, "place the output of") if reader.default_output else None)


def _guarded_exporter(ep: EntryPoint, exporter: HfExporter) -> HfExporter:
    def recognises(ck: Checkpoint) -> bool:
        return _run(ep, "tell whether it exports", ck.path, exporter.recognises, ck)

    def tensors(ck: Checkpoint, opts: ConvertOptions) -> HfTensors:
        return _run(ep, "export", ck.path, exporter.tensors, ck, opts)

    def usage(config: dict[str, Any], files: dict[str, bytes]) -> list[str]:
        return _run(ep, "describe the use of", None, exporter.usage, config, files)

    return replace(exporter, recognises=recognises, tensors=tensors, usage=usage)


def _guarded_checks(ep: EntryPoint, checks: ModelChecks) -> ModelChecks:
    def run(folder: Path, model: Any, ids: Any, report: Report) -> None:
        _run(ep, "check", folder, checks.run, folder, model, ids, report)

    return replace(checks, run=run)


def guarded_family(ep: EntryPoint, family: Family) -> Family:
    """A plugin's family whose readers, exporter and checks name the plugin when they fail."""
    return replace(family, readers=tuple(guarded_reader(ep, r) for r in family.readers),
                   hf_exporter=_guarded_exporter(ep, family.hf_exporter) if family.hf_exporter else None,
                   checks=_guarded_checks(ep, family.checks) if family.checks else None)


def families_of(ep: EntryPoint) -> list[Family]:
    """The families entry point ``ep`` gives: a Family, a list or tuple of them, or a function returning those."""
    value = _load(ep)
    if callable(value) and not isinstance(value, Family):
        value = value()
    found = [value] if isinstance(value, Family) else list(value) if isinstance(value, (list, tuple)) else []
    if not found or not all(isinstance(f, Family) for f in found):
        raise ConversionError(f"{describe(ep)} gives a {type(value).__name__}, not a Family or a list of them")
    return found


@functools.cache
def arch_tables() -> tuple[tuple[EntryPoint, Arch], ...]:
    """Every ``pyconv.archs`` plugin's tables, each with the entry point it came from."""
    found: list[tuple[EntryPoint, Arch]] = []
    for ep in group(ARCH_GROUP):
        value = _load(ep)
        tables = [value] if isinstance(value, Arch) else list(value) if isinstance(value, (list, tuple)) else []
        if not tables or not all(isinstance(t, Arch) for t in tables):
            raise ConversionError(f"{describe(ep)} gives a {type(value).__name__}, not an Arch or a list of them")
        found += [(ep, t) for t in tables]
    return tuple(found)


def register_table(known: dict[str, Arch], table: Arch, ep: EntryPoint | None) -> None:
    """Add ``table`` (a plugin's when ``ep`` is given) to ``known``, refusing a name that is taken."""
    if known.get(table.name) is table:
        return
    if table.name in known:
        owner = describe(ep) if ep is not None else "pyconv"
        raise ConversionError(f"{owner} names its architecture '{table.name}', which pyconv already has")
    known[table.name] = table


@functools.cache
def readers() -> tuple[Reader, ...]:
    """Every ``pyconv.sources`` plugin's reader, wrapped so that what goes wrong in it is named as the plugin's."""
    found = []
    for ep in group(SOURCE_GROUP):
        reader = _load(ep)
        if not isinstance(reader, Reader):
            raise ConversionError(f"{describe(ep)} gives a {type(reader).__name__}, not a pyconv.sources.Reader")
        found.append(guarded_reader(ep, reader))
    return tuple(found)
