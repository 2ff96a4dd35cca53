"""Bridge from a ``Plan`` to the C++ engine: builds ``_core.Plan``, lays it out, runs it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core
from .errors import ConversionError
from .plan import BitField, OutTensor, Plan
from .sources.base import SourceTensor

from .options import DEFAULT_CHUNK_BYTES


@dataclass
class Layout:
    file_sizes: list[int]
    tensor_spans: list[tuple[int, int]]  # (offset, nbytes) per plan tensor

    @property
    def total_bytes(self) -> int:
        return sum(self.file_sizes)


def _core_plan(plan: Plan, paths: list[Path]) -> _core.Plan:
    core = _core.Plan()
    inputs: dict[Path, int] = {}
    sources: dict[int, int] = {}

    def source_id(t: SourceTensor) -> int:
        if id(t) not in sources:
            segs = []
            for s in t.segments:
                if s.path not in inputs:
                    inputs[s.path] = core.add_input(str(s.path))
                segs.append((inputs[s.path], s.offset, s.nbytes))
            sources[id(t)] = core.add_source(t.dtype, segs)
        return sources[id(t)]

    for f, path in zip(plan.files, paths):
        if f.container == "safetensors":
            core.add_safetensors_file(str(path), sorted(f.metadata.items()))
        elif f.container == "gguf":
            core.add_gguf_file(str(path), f.kvs, f.alignment)
        else:
            core.add_raw_file(str(path), f.size, f.blobs)
    for t in plan.tensors:
        # the engine places parts in at least one dim; a scalar is a 1-element box
        parts = [(source_id(p.view.tensor), p.view.offset, list(p.view.strides) or [1], list(p.at) or [0],
                  list(p.view.shape) or [1], _field(p.field)) for p in t.parts]
        ops = [(op.kind, op.value, op.keep_if_ternary, op.round_to) for op in t.ops]
        core.add_tensor(t.name, list(t.shape), list(t.layout) or [1], t.dtype, t.file, parts, ops, t.offset)
    return core


def _field(f: BitField | None) -> tuple[int, int, float, float]:
    return (f.bits, f.shift, f.offset, f.scale) if f else (0, 0, 0.0, 1.0)


def _raise_core(e: Exception, plan_tensors: list[OutTensor]) -> ConversionError:
    text = str(e)
    tensor = next((t.name for t in plan_tensors if f"'{t.name}'" in text), None)
    return ConversionError(text.replace(f"tensor '{tensor}': ", "") if tensor else text, tensor=tensor)


def layout(plan: Plan) -> Layout:
    """Offsets and sizes of everything the plan writes, computed without touching any data."""
    core = _core_plan(plan, [Path(f.name) for f in plan.files])
    try:
        core.layout()
    except _core.CoreError as e:
        raise _raise_core(e, plan.tensors) from None
    return Layout(list(core.file_sizes()), list(core.tensor_spans()))


# (bytes done, bytes in all, per output file the length of its completely written prefix)
ProgressHook = Callable[[int, int, list[int]], Any]


def execute(plan: Plan, paths: list[Path], *, threads: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
            progress: ProgressHook | None = None) -> list[dict[str, Any]]:
    """Write every file of the plan at ``paths`` (one per plan file). Returns the engine's per-tensor
    reports (ternarization decisions). Files are removed again if anything fails."""
    core = _core_plan(plan, paths)
    try:
        return list(core.execute(threads, chunk_bytes, progress))
    except _core.CoreError as e:
        raise _raise_core(e, plan.tensors) from None


class ProgressBar:
    """tqdm bar fed by the engine; appears only for runs longer than about a second."""

    def __init__(self, description: str, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled and os.environ.get("PYCONV_NO_PROGRESS") is None
        self._bar: Any = None

    def __call__(self, done: int, total: int, _prefixes: list[int]) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.description, unit="B", unit_scale=True, unit_divisor=1000,
                             delay=1.0, file=sys.stderr, leave=False, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
