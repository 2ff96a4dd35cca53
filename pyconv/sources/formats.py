"""The formats pyconv reads itself, and how a path finds the reader that opens it.

Readers are asked in turn, the first that recognises the path opens it: other packages' readers, then
the trainer layouts families bring (``pyconv.registry``), then pyconv's own formats below. A trainer's
folder holds files a generic format would misread (a step folder's safetensors only make sense merged
and regrouped, or with the run's config.yaml), so the layouts come first; a DeepSpeed folder holds .pt
files too, so ZeRO is asked before torch.
"""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..errors import ConversionError
from ..options import ConvertOptions
from . import native, torch_pickle, zero
from .checkpoint import Checkpoint, Reader
from .gguf_checkpoint import open_gguf
from .safetensors import open_safetensors


def _is_safetensors(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and (any(path.glob("*.safetensors.index.json")) or any(path.glob("*.safetensors")))


def _is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix == ".gguf"


FORMATS: tuple[Reader, ...] = (
    Reader("native", native.recognises, lambda path, _opts: native.open_native(path)),
    Reader("safetensors", _is_safetensors, lambda path, _opts: open_safetensors(path)),
    Reader("gguf", _is_gguf, lambda path, _opts: open_gguf(path)),
    Reader("zero", zero.recognises, zero.open_zero),
    Reader("torch", torch_pickle.recognises, torch_pickle.open_torch),
)


def readers() -> tuple[Reader, ...]:
    """Every reader, in the order they are asked."""
    return (*registry.readers(), *FORMATS)


def open_checkpoint(path: str | Path, options: ConvertOptions | None = None) -> Checkpoint:
    """Open a checkpoint file or folder with the first reader that recognises it."""
    p = Path(path)
    opts = options or ConvertOptions()
    if not p.exists():
        raise ConversionError("no such file or folder", file=p)
    asked = readers()
    for reader in asked:
        if reader.recognises(p):
            ck = reader.open(p, opts)
            ck.strip_prefixes(opts.source.strip_prefixes)
            return ck
    known = ", ".join(r.name for r in asked)
    raise ConversionError(f"not a checkpoint pyconv can read (readers: {known})", file=p)


def default_output(path: str | Path) -> Path:
    """Where an export of ``path`` goes when no output is named: only trainer layouts that fix a place have one."""
    p = Path(path)
    placing = [r for r in readers() if r.default_output is not None]
    for reader in placing:
        if reader.default_output is not None and reader.recognises(p):
            return reader.default_output(p)
    names = ", ".join(r.name for r in placing)
    raise ConversionError(f"name the output with -o (only {names} trainer checkpoints have a default place)", file=p)
