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
    """Open a checkpoint file or folder with the reader ``--source`` names, else the first that recognises it."""
    p = Path(path)
    opts = options or ConvertOptions()
    if not p.exists():
        raise ConversionError("no such file or folder", file=p)
    asked = registry.readers()
    named = opts.source.source_format
    if named is not None:
        chosen = next((r for r in asked if r.name == named), None)
        if chosen is None:
            raise ConversionError(f"--source {named} is not a source format pyconv reads ({', '.join(r.name for r in asked)})", file=p)
        if not chosen.recognises(p):
            there = [r.name for r in asked if r.recognises(p)]
            hint = f"it holds {', '.join(there)} (--source {there[0]})" if there else "nor any other checkpoint pyconv reads"
            raise ConversionError(f"--source {named}: this holds no {named} checkpoint; {hint}", file=p)
        found = [chosen]
    else:
        found = [r for r in asked if r.recognises(p)]
    if not found:
        raise ConversionError(f"not a checkpoint pyconv can read (readers: {', '.join(r.name for r in asked)})", file=p)
    try:
        ck = found[0].open(p, opts)
    except ConversionError as e:
        others = [r.name for r in found[1:]]
        if not others:
            raise
        # a folder holding two kinds of checkpoint: the one read first may not be the one the user meant
        raise ConversionError(f"{e.message} (read as {found[0].name}; this folder also holds {', '.join(others)}: "
                              f"pick one with --source {'|'.join(r.name for r in found)})", file=e.file, tensor=e.tensor) from None
    ck.strip_prefixes(opts.source.strip_prefixes)
    dequantize(ck)
    merge_adapters(ck, opts.source.merge_lora)
    return ck


def default_output(path: str | Path) -> Path:
    """Where an export of ``path`` goes when no output is named: only trainer layouts that fix a place have one."""
    p = Path(path)
    placing = [r for r in registry.readers() if r.default_output is not None]
    for reader in placing:
        if reader.default_output is not None and reader.recognises(p):
            return reader.default_output(p)
    names = ", ".join(r.name for r in placing)
    raise ConversionError(f"name the output with -o (only {names} trainer checkpoints have a default place)", file=p)
