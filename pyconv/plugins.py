"""Architecture tables and source readers from other packages, found through entry points.

A package adds them in its pyproject.toml::

    [project.entry-points."pyconv.archs"]
    mymodel = "my_package.tables:MYMODEL"      # a pyconv.archs.Arch, or a list or tuple of them

    [project.entry-points."pyconv.sources"]
    myformat = "my_package.reader:READER"      # a pyconv.sources.Reader(name, recognises, open)

Tables are registered the first time pyconv looks an architecture up, after its own, so a plugin adds
families but cannot take over a class pyconv knows (``--arch`` still chooses it). Readers are asked
before pyconv's own, as trainer layouts are: a plugin's format usually holds files pyconv would
otherwise misread. A plugin that cannot be imported, gives something else, reuses a name, fails with
anything but a ConversionError or points at bytes its files do not have is an error naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConversionError
from .options import ConvertOptions

if TYPE_CHECKING:
    from .archs.base import Arch
    from .sources import Reader
    from .sources.base import Checkpoint

ARCH_GROUP = "pyconv.archs"
SOURCE_GROUP = "pyconv.sources"
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


def _plugins(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value))


@functools.cache
def arch_tables() -> tuple[tuple[EntryPoint, Arch], ...]:
    """Every plugin's tables, each with the entry point it came from."""
    from .archs.base import Arch

    found: list[tuple[EntryPoint, Arch]] = []
    for ep in _plugins(ARCH_GROUP):
        value = _load(ep)
        tables = [value] if isinstance(value, Arch) else list(value) if isinstance(value, (list, tuple)) else []
        if not tables or not all(isinstance(t, Arch) for t in tables):
            raise ConversionError(f"{describe(ep)} gives a {type(value).__name__}, not an Arch or a list of them")
        found += [(ep, t) for t in tables]
    return tuple(found)


def register_archs(known: dict[str, Arch]) -> None:
    """Add the plugins' tables to ``known`` (pyconv's registry), refusing names that are taken."""
    for ep, table in arch_tables():
        if known.get(table.name) is table:
            continue
        if table.name in known:
            raise ConversionError(f"{describe(ep)} names its architecture '{table.name}', which pyconv already has")
        known[table.name] = table


def _guarded(ep: EntryPoint, call: Callable[..., T], what: str) -> Callable[..., T]:
    def run(path: Path, *args: Any) -> T:
        try:
            return call(path, *args)
        except ConversionError:
            raise
        except Exception as e:  # a plugin's bug, reported as the plugin's
            raise ConversionError(f"{describe(ep)} failed to {what} it: {type(e).__name__}: {e}", file=path) from None
    return run


def _checked(ep: EntryPoint, open_: Callable[[Path, ConvertOptions], Any]) -> Callable[[Path, ConvertOptions], Checkpoint]:
    """``open_`` whose checkpoint is checked before the engine trusts it: every segment inside its file."""
    from .sources.base import Checkpoint

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


@functools.cache
def readers() -> tuple[Reader, ...]:
    """Every plugin's reader, wrapped so that what goes wrong in it is named as the plugin's."""
    from .sources import Reader

    found = []
    for ep in _plugins(SOURCE_GROUP):
        reader = _load(ep)
        if not isinstance(reader, Reader):
            raise ConversionError(f"{describe(ep)} gives a {type(reader).__name__}, not a pyconv.sources.Reader")
        found.append(Reader(reader.name, _guarded(ep, reader.recognises, "tell whether it can read"),
                            _guarded(ep, _checked(ep, reader.open), "read")))
    return tuple(found)
