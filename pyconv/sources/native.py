"""Trainer checkpoints written by ``--to native`` (layout in ``targets/native.py``), read back as HF tensors.

Tensor-parallel rank files are merged and fused projections cut apart without moving a byte: a merged
tensor is a source whose segments are the ranks' slices in row-major order of the whole (a column
slice of a row-parallel weight is one segment per row and rank), and a piece of a fused tensor is a
byte range of it, read transposed (strided) where HF stores the weight [in, out].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import dtypes
from ..archs.arch import Arch
from ..archs.catalog import Catalog
from ..archs.config import Config
from ..archs.hf_layout import template_pattern
from ..archs.native_layout import row_counts
from ..archs.tensor_parallel import sharding
from ..errors import ConversionError
from .base import Segment, SourceTensor, byte_range
from .json_files import read_config
from .safetensors import read_file
from .state_dict import StateDictCheckpoint

LATEST = "latest_step.txt"
NATIVE_KEY = "pyconv_native"
STEP = re.compile(r"^step_(\d+)$")


def rank_file(rank: int, tp_size: int) -> str:
    return "model.safetensors" if tp_size == 1 else f"model-tp{rank:02d}-of-{tp_size:02d}.safetensors"


def _config(folder: Path) -> dict[str, Any] | None:
    doc = read_config(folder)
    return doc if doc is not None and isinstance(doc.get(NATIVE_KEY), dict) else None


def step_dir(path: Path) -> Path:
    """The step folder ``path`` names: itself, or the one its latest_step.txt points to."""
    pointer = path / LATEST
    if pointer.is_file():
        text = pointer.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise ConversionError(f"holds {text[:40]!r}, not a step number", file=pointer)
        folder = path / f"step_{int(text)}"
        if not folder.is_dir():
            raise ConversionError(f"points to step {int(text)} but there is no {folder.name}/", file=pointer)
        return folder
    return path


def recognises(path: Path) -> bool:
    return path.is_dir() and ((path / LATEST).is_file() or (STEP.match(path.name) is not None and _config(path) is not None))


def _coalesced(segments: list[Segment]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for s in segments:
        if out and out[-1].path == s.path and out[-1].offset + out[-1].nbytes == s.offset:
            out[-1] = Segment(s.path, out[-1].offset, out[-1].nbytes + s.nbytes)
        else:
            out.append(s)
    return tuple(out)


def merge_ranks(name: str, ranks: list[SourceTensor]) -> SourceTensor:
    """One tensor from its rank slices, by the tensor-parallel rule for its name."""
    rule = sharding(name)
    first = ranks[0]
    if rule.dim is None or len(ranks) == 1:
        return first
    if any(r.shape[:rule.dim] != first.shape[:rule.dim] or r.shape[rule.dim + 1:] != first.shape[rule.dim + 1:]
           or r.dtype != first.dtype or len(r.segments) != 1 for r in ranks):
        raise ConversionError("rank slices disagree in shape or type", tensor=name)
    if first.shape[rule.dim] % rule.parts:
        raise ConversionError(f"dim {rule.dim} of a rank slice does not hold {rule.parts} equal parts", tensor=name)
    outer = math.prod(first.shape[:rule.dim])
    chunk = first.shape[rule.dim] // rule.parts * math.prod(first.shape[rule.dim + 1:]) * int(dtypes.info(first.dtype)["block_bytes"])
    segments = [Segment(r.segments[0].path, r.segments[0].offset + (o * rule.parts + p) * chunk, chunk)
                for o in range(outer) for p in range(rule.parts) for r in ranks]
    shape = first.shape[:rule.dim] + (first.shape[rule.dim] * len(ranks),) + first.shape[rule.dim + 1:]
    return SourceTensor(name, first.dtype, shape, _coalesced(segments))


def unfuse(tensors: dict[str, SourceTensor], arch: Arch, config: dict[str, Any]) -> dict[str, SourceTensor]:
    """The fused layout's tensors cut back into HF's by ``arch``'s native layout, in order."""
    cfg = Config(config)
    replaced: dict[str, list[SourceTensor]] = {}
    consumed: set[str] = set()
    for group in arch.native.fused:
        pattern = template_pattern(group.fused[0].name)
        for name in list(tensors):
            m = pattern.match(name)
            if not m:
                continue
            bid, suffix = m["bid"] or "", m["suffix"]
            names = [p.name.format(bid=bid) + suffix for p in group.fused]
            pieces = [tensors.get(n) for n in names]
            if any(p is None for p in pieces):
                raise ConversionError(f"the fused layout has '{name}' without all of {names}")
            parts = [p for p in pieces if p is not None]
            cols = parts[0].shape[1:]
            if any(p.shape[1:] != cols or p.strides is not None for p in parts):
                raise ConversionError(f"fused pieces {names} disagree in shape", tensor=name)
            segments = tuple(s for p in parts for s in p.segments)
            total = sum(p.shape[0] for p in parts)
            row_bytes = math.prod(cols) * int(dtypes.info(parts[0].dtype)["block_bytes"])
            out, at = [], 0
            for piece, rows in zip(group.hf, row_counts(group.hf, total, cfg, name)):
                hf = piece.name.format(bid=bid) + suffix
                segs = byte_range(segments, at * row_bytes, (at + rows) * row_bytes)
                if group.transposed and suffix == ".weight":
                    out.append(SourceTensor(hf, parts[0].dtype, (cols[0], rows), segs, 0, (1, cols[0])))
                else:
                    out.append(SourceTensor(hf, parts[0].dtype, (rows, *cols), segs))
                at += rows
            replaced[names[0]] = out
            consumed.update(names)
    result: dict[str, SourceTensor] = {}
    for name, t in tensors.items():
        for kept in replaced.get(name, [t] if name not in consumed else []):
            result[kept.name] = kept
    return result


@dataclass
class NativeCheckpoint(StateDictCheckpoint):
    format_name = "native"
    step: int = 0
    layout: str = "fused"        # "fused" (the trainer's projections) or "hf"
    tp_size: int = 1

    @property
    def training_step(self) -> int:
        return self.step

    def details(self) -> dict[str, Any]:
        return {"step": self.step, "layout": self.layout, "tp_size": self.tp_size}


def open_native(path: Path, catalog: Catalog) -> NativeCheckpoint:
    """A step folder (or the folder whose latest_step.txt names one), the family's table from ``catalog``."""
    folder = step_dir(path)
    config = _config(folder)
    if config is None:
        raise ConversionError("no config.json with a 'pyconv_native' block in this step folder", file=folder)
    native = config.pop(NATIVE_KEY)
    tp = native.get("tp_size", 1)
    layout = native.get("layout")
    if not isinstance(tp, int) or tp < 1 or layout not in ("fused", "hf") or not isinstance(native.get("arch"), str):
        raise ConversionError(f"'{NATIVE_KEY}' is not a layout pyconv wrote: {native}", file=folder / "config.json")
    files = [folder / rank_file(r, tp) for r in range(tp)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConversionError(f"rank file(s) {', '.join(missing)} missing", file=folder)
    ranks = [read_file(f)[0] for f in files]
    names = list(ranks[0])
    for f, r in zip(files[1:], ranks[1:]):
        if list(r) != names:
            raise ConversionError("holds other tensors than rank 0", file=f)
    merged = {n: merge_ranks(n, [r[n] for r in ranks]) for n in names}
    tensors = unfuse(merged, catalog.named(native["arch"]), config) if layout == "fused" else merged
    step = native.get("step")
    named = STEP.match(folder.name)
    return NativeCheckpoint(folder, tensors, files, {}, config, step=step if isinstance(step, int) else int(named[1]) if named else 0,
                            layout=layout, tp_size=tp)
