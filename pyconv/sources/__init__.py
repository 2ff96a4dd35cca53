"""Source readers. ``open_checkpoint`` picks the reader that recognises a path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConversionError
from ..options import ConvertOptions
from .base import Checkpoint, Segment, SourceTensor


@dataclass(frozen=True)
class Reader:
    name: str
    recognises: Callable[[Path], bool]
    open: Callable[[Path, ConvertOptions], Checkpoint]


def _is_safetensors(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and (any(path.glob("*.safetensors.index.json")) or any(path.glob("*.safetensors")))


def _open_safetensors(path: Path, _opts: ConvertOptions) -> Checkpoint:
    from .safetensors import open_safetensors

    return open_safetensors(path)


def _is_zero(path: Path) -> bool:
    from .zero import recognises

    return recognises(path)


def _open_zero(path: Path, opts: ConvertOptions) -> Checkpoint:
    from .zero import open_zero

    return open_zero(path, opts)


def _is_torch(path: Path) -> bool:
    from .torch_pickle import recognises

    return recognises(path)


def _open_torch(path: Path, opts: ConvertOptions) -> Checkpoint:
    from .torch_pickle import open_torch

    return open_torch(path, opts)


def _is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix == ".gguf"


def _open_gguf(path: Path, _opts: ConvertOptions) -> Checkpoint:
    from .gguf import open_gguf

    return open_gguf(path)


def _is_neobert(path: Path) -> bool:
    from .neobert_trainer import recognises

    return recognises(path)


def _open_neobert(path: Path, opts: ConvertOptions) -> Checkpoint:
    from .neobert_trainer import open_neobert_trainer

    return open_neobert_trainer(path, opts)


def _is_native(path: Path) -> bool:
    from .native import recognises

    return recognises(path)


def _open_native(path: Path, _opts: ConvertOptions) -> Checkpoint:
    from .native import open_native

    return open_native(path)


# A DeepSpeed folder holds .pt files too, so ZeRO is asked before torch; a trainer's step folder holds
# safetensors files that only make sense merged and regrouped (or with the run's config.yaml), so the
# trainer layouts are asked first.
READERS: list[Reader] = [
    Reader("neobert", _is_neobert, _open_neobert),
    Reader("native", _is_native, _open_native),
    Reader("safetensors", _is_safetensors, _open_safetensors),
    Reader("gguf", _is_gguf, _open_gguf),
    Reader("zero", _is_zero, _open_zero),
    Reader("torch", _is_torch, _open_torch),
]


def strip_prefixes(ck: Checkpoint, prefixes: tuple[str, ...]) -> Checkpoint:
    """Tensor names without wrapper prefixes (torch.compile's ``_orig_mod.``, DDP's ``module.``),
    removed from the start of a name as long as one matches."""
    if not prefixes:
        return ck
    renamed: dict[str, SourceTensor] = {}
    was: dict[str, str] = {}
    for name, t in ck.tensors.items():
        new = name
        while match := next((p for p in prefixes if p and new.startswith(p)), None):
            new = new[len(match):]
        if not new:
            raise ConversionError("stripping prefixes leaves an empty name", file=ck.path, tensor=name)
        if new in renamed:
            raise ConversionError(f"'{was[new]}' and '{name}' both become '{new}' once prefixes are stripped", file=ck.path)
        renamed[new] = t if new == name else replace(t, name=new)
        was[new] = name
    ck.tensors = renamed
    return ck


def open_checkpoint(path: str | Path, options: ConvertOptions | None = None) -> Checkpoint:
    """Open a checkpoint file or folder with the first reader that recognises it."""
    p = Path(path)
    opts = options or ConvertOptions()
    if not p.exists():
        raise ConversionError("no such file or folder", file=p)
    from ..plugins import readers as plugin_readers

    readers = [*plugin_readers(), *READERS]  # a plugin's format is asked first, as trainer layouts are
    for reader in readers:
        if reader.recognises(p):
            return strip_prefixes(reader.open(p, opts), opts.strip_prefixes)
    known = ", ".join(r.name for r in readers)
    raise ConversionError(f"not a checkpoint pyconv can read (readers: {known})", file=p)


def default_output(path: str | Path) -> Path:
    """Where an export of ``path`` goes when no output is named: only trainer layouts that fix a place have one."""
    from .neobert_trainer import default_output as neobert_output, recognises as is_neobert

    p = Path(path)
    if is_neobert(p):
        return neobert_output(p)
    raise ConversionError("name the output with -o (only NeoBERT trainer checkpoints have a default place)", file=p)


__all__ = ["Checkpoint", "Reader", "READERS", "Segment", "SourceTensor", "default_output", "open_checkpoint"]
