"""Bridge from a ``Plan`` to the C++ engine: builds ``_core.Plan`` from the engine's own typed
objects (sources, parts, ops, tensors, files), lays it out, runs it, and turns an engine error into
a ``ConversionError`` from the tensor index and file the error carries."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core, dtypes
from .errors import ConversionError
from .options import DEFAULT_CHUNK_BYTES
from .plan import BitField, OutFile, Plan
from .sources.base import SourceTensor

_OP_KINDS = {"add": _core.OpKind.ADD_SCALAR, "ternarize_absmean": _core.OpKind.TERNARIZE_ABSMEAN}
_CONTAINERS = {"safetensors": _core.Container.SAFETENSORS, "gguf": _core.Container.GGUF, "raw": _core.Container.RAW}


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
            segments = []
            for s in t.segments:
                if s.path not in inputs:
                    inputs[s.path] = core.add_input(str(s.path))
                segments.append(_core.Segment(inputs[s.path], s.offset, s.nbytes))
            scale = _core.Scale()
            if t.scale is not None:
                scale = _core.Scale(source_id(t.scale.tensor), list(t.shape), list(t.scale.block))
            updates = [_core.LowRank(source_id(u.a), source_id(u.b), t.shape[0], t.shape[1], u.a.shape[0], u.factor)
                       for u in t.updates]
            sources[id(t)] = core.add_source(_core.Source(dtypes.row(t.dtype).id, segments, scale, updates))
        return sources[id(t)]

    for f, path in zip(plan.files, paths):
        core.add_file(_file(f, path))
    for t in plan.tensors:
        # the engine places parts in at least one dim; a scalar is a 1-element box
        parts = [_core.Part(source_id(p.view.tensor), p.view.offset, list(p.view.strides) or [1], list(p.at) or [0],
                            list(p.view.shape) or [1], _field(p.field)) for p in t.parts]
        ops = [_core.Op(_OP_KINDS[op.kind], op.value, op.keep_if_ternary, dtypes.row(op.round_to).id) for op in t.ops]
        core.add_tensor(_core.Tensor(t.name, list(t.shape), list(t.layout) or [1], dtypes.row(t.dtype).id, t.file,
                                     parts, ops, t.offset, [] if t.importance is None else t.importance.tolist()))
    return core


def _file(f: OutFile, path: Path) -> _core.OutputFile:
    kvs = [_core.GgufKV(key, _core.GgufType(value_type), value) for key, value_type, value in f.kvs]
    return _core.OutputFile(str(path), _CONTAINERS[f.container], metadata=sorted(f.metadata.items()), kvs=kvs,
                            alignment=f.alignment, blobs=f.blobs, size=f.size)


def _field(f: BitField | None) -> _core.BitField:
    return _core.BitField(f.bits, f.shift, f.offset, f.scale) if f else _core.BitField()


def _conversion_error(e: _core.CoreError, plan: Plan) -> ConversionError:
    tensor = plan.tensors[e.tensor].name if e.tensor is not None else None
    return ConversionError(e.message, tensor=tensor, file=e.file)


def layout(plan: Plan) -> Layout:
    """Offsets and sizes of everything the plan writes, computed without touching any data."""
    core = _core_plan(plan, [Path(f.name) for f in plan.files])
    try:
        core.layout()
    except _core.CoreError as e:
        raise _conversion_error(e, plan) from None
    return Layout(list(core.file_sizes()), list(core.tensor_spans()))


# (bytes done, bytes in all, per output file the length of its completely written prefix)
ProgressHook = Callable[[int, int, list[int]], Any]


def execute(plan: Plan, paths: list[Path], *, threads: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
            progress: ProgressHook | None = None) -> list[dict[str, Any]]:
    """Write every file of the plan at ``paths`` (one per plan file). Returns the engine's per-tensor
    reports (ternarization decisions). Files are removed again if anything fails."""
    core = _core_plan(plan, paths)
    try:
        reports = core.execute(threads, chunk_bytes, progress)
    except _core.CoreError as e:
        raise _conversion_error(e, plan) from None
    return [{"name": plan.tensors[r.tensor].name, "ternarized": r.ternarized, "already_ternary": r.already_ternary,
             "scale": r.scale, "mean_abs": r.mean_abs} for r in reports]


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
