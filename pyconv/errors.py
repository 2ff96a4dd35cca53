"""The one exception pyconv raises for anything wrong with the user's input or output."""

from __future__ import annotations

from pathlib import Path

# Names and values in messages come from untrusted files and can be megabytes long; a line stays readable.
MAX_NAME_CHARS = 200
MAX_MESSAGE_CHARS = 1000


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


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
            name = _shorten(self.tensor, MAX_NAME_CHARS)
            where.append(f"tensor '{name}'" if name.isprintable() else f"tensor {name!r}")
        prefix = ": ".join(where)
        text = _shorten(" ".join(self.message.split()), MAX_MESSAGE_CHARS)  # one line, whatever the cause said
        return f"{prefix}: {text}" if prefix else text
