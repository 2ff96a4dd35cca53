"""Source readers, one module per format. ``open_checkpoint`` picks the reader that recognises a path
(``opening.py``); a plugin's reader gives a ``Checkpoint`` of its own subclass (usually of
``StateDictCheckpoint``).

Only ``base`` (the tensor types the plan and engine are built on) is imported with the package; the
names below come from their modules when first used, so that importing ``pyconv.sources.base`` never
runs the readers' imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Segment, SourceTensor

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, Reader
    from .opening import default_output, open_checkpoint
    from .state_dict import StateDictCheckpoint

__all__ = ["Checkpoint", "Reader", "Segment", "SourceTensor", "StateDictCheckpoint", "default_output", "open_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("Checkpoint", "Reader"):
        from . import checkpoint

        return getattr(checkpoint, name)
    if name in ("default_output", "open_checkpoint"):
        from . import opening

        return getattr(opening, name)
    if name == "StateDictCheckpoint":
        from .state_dict import StateDictCheckpoint

        return StateDictCheckpoint
    raise AttributeError(f"module 'pyconv.sources' has no attribute {name!r}")
