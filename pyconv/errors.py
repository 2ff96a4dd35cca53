"""The one exception pyconv raises for anything wrong with the user's input or output."""

from __future__ import annotations

from pathlib import Path


class ConversionError(Exception):
    """A conversion cannot go on. ``str()`` is one line naming the file, the tensor and the problem."""

    def __init__(self, message: str, *, file: str | Path | None = None, tensor: str | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.tensor = tensor
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.tensor is not None:
            # names come from untrusted headers: escape anything that would break the line
            where.append(f"tensor '{self.tensor}'" if self.tensor.isprintable() else f"tensor {self.tensor!r}")
        prefix = ": ".join(where)
        text = " ".join(self.message.split())  # one line, whatever the cause said
        return f"{prefix}: {text}" if prefix else text
