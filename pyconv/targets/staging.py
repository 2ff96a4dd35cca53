"""Outputs appear complete or not at all: written under temporary names beside their final place,
synced, then renamed. Nothing the user had is touched unless ``force`` allows replacing it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from ..errors import ConversionError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_free_space(folder: Path, needed: int) -> None:
    free = free_bytes(folder)
    if needed > free:
        from ..units import format_bytes

        raise ConversionError(f"not enough disk space: the output needs {format_bytes(needed)}, {format_bytes(free)} free", file=folder)


def write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Staging:
    """A folder output (``folder=True``) or a file output plus sidecars, staged under temp names."""

    def __init__(self, final: Path, *, folder: bool, force: bool, sidecars: tuple[str, ...] = ()) -> None:
        self.final = final
        self.folder = folder
        self.force = force
        self.parent = final.parent
        self._made: list[Path] = []  # parent folders this output created, removed again on failure
        token = f"pyconv-{os.getpid()}-{secrets.token_hex(4)}"
        self._tmp_dir = self.parent / f".{final.name}.{token}" if folder else None
        self._files: dict[str, Path] = {}  # final name -> temp path (file mode)
        self._token = token
        for name in (final.name, *sidecars):
            self._check_free_name(self.parent / name)

    def _check_free_name(self, path: Path) -> None:
        if not path.exists() and not path.is_symlink():
            return
        if self.folder and path == self.final and path.is_dir() and not any(path.iterdir()):
            return
        if not self.force:
            raise ConversionError("already exists; pass --force to replace it with the new output", file=path)
        if self.folder and path == self.final and not path.is_dir():
            raise ConversionError("exists and is not a folder", file=path)
        if not self.folder and path.is_dir():
            raise ConversionError("exists and is a folder", file=path)

    def __enter__(self) -> Staging:  # noqa: PYI034  (Staging has no subclasses)
        missing = [p for p in (self.parent, *self.parent.parents) if not p.exists()]
        try:
            for p in reversed(missing):
                p.mkdir()
                self._made.append(p)
        except OSError as e:
            self.abort()
            raise ConversionError(f"cannot create the output folder: {e.strerror}", file=e.filename or self.parent) from None
        if self._tmp_dir is not None:
            self._tmp_dir.mkdir()
        return self

    def path(self, name: str) -> Path:
        """Temporary path for the output file ``name`` (relative to the folder, or a sibling name)."""
        if self._tmp_dir is not None:
            p = self._tmp_dir / name
            p.parent.mkdir(parents=True, exist_ok=True)
            return p
        if name not in self._files:
            self._check_free_name(self.parent / name)
            self._files[name] = self.parent / f".{name}.{self._token}"
        return self._files[name]

    def discard(self, name: str) -> None:
        """Forget the staged file ``name``: it is not part of the output after all (``--compress-only``)."""
        self._files.pop(name).unlink()

    def commit(self) -> None:
        if self._tmp_dir is not None:
            for p in self._tmp_dir.rglob("*"):
                if p.is_dir():
                    fsync_dir(p)
            fsync_dir(self._tmp_dir)
            trash = None
            if self.final.exists():
                trash = self.parent / f".{self.final.name}.{self._token}.old"
                self.final.rename(trash)
            self._tmp_dir.rename(self.final)
            self._tmp_dir = None
            if trash is not None:
                shutil.rmtree(trash)
        else:
            # sidecars first, the main file last: whoever sees the main file sees all of it
            for name in sorted(self._files, key=lambda n: n == self.final.name):
                os.replace(self._files[name], self.parent / name)
            self._files.clear()
        fsync_dir(self.parent)

    def abort(self) -> None:
        if self._tmp_dir is not None and self._tmp_dir.exists():
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
        for p in self._files.values():
            p.unlink(missing_ok=True)
        self._files.clear()
        for p in reversed(self._made):
            with contextlib.suppress(OSError):  # left alone if something else appeared inside
                p.rmdir()
        self._made.clear()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
