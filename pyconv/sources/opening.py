"""How a path finds the reader that opens it: the registry's readers are asked in turn (``registry.readers``
says in which order), the first that recognises the path opens it."""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..errors import ConversionError
from ..options import ConvertOptions
from .checkpoint import Checkpoint
from .lora import merge_adapters
from .prequantized import dequantize


def open_checkpoint(path: str | Path, options: ConvertOptions | None = None) -> Checkpoint:
    """Open a checkpoint file or folder with the first reader that recognises it."""
    p = Path(path)
    opts = options or ConvertOptions()
    if not p.exists():
        raise ConversionError("no such file or folder", file=p)
    asked = registry.readers()
    for reader in asked:
        if reader.recognises(p):
            ck = reader.open(p, opts)
            ck.strip_prefixes(opts.source.strip_prefixes)
            dequantize(ck)
            merge_adapters(ck, opts.source.merge_lora)
            return ck
    known = ", ".join(r.name for r in asked)
    raise ConversionError(f"not a checkpoint pyconv can read (readers: {known})", file=p)


def default_output(path: str | Path) -> Path:
    """Where an export of ``path`` goes when no output is named: only trainer layouts that fix a place have one."""
    p = Path(path)
    placing = [r for r in registry.readers() if r.default_output is not None]
    for reader in placing:
        if reader.default_output is not None and reader.recognises(p):
            return reader.default_output(p)
    names = ", ".join(r.name for r in placing)
    raise ConversionError(f"name the output with -o (only {names} trainer checkpoints have a default place)", file=p)
