"""The plan: every output tensor as a small recipe over strided views of source tensors.

A ``View`` is a numpy-like strided window on a ``SourceTensor`` (slice, permute, transpose,
reshape), costing nothing until the engine runs. An ``OutTensor`` places views in a layout and
names the output type and element ops. The plan is printable (``--dry-run``) and sized before any
byte moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from . import dtypes
from .errors import ConversionError
from .sources.base import SourceTensor


def _row_major(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return tuple(strides)


@dataclass(frozen=True)
class View:
    """Elements ``offset + sum(i[d] * strides[d])`` of ``tensor`` for every index ``i < shape``."""

    tensor: SourceTensor
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    steps: tuple[str, ...] = ()  # what was done to the tensor, for --dry-run

    @classmethod
    def of(cls, tensor: SourceTensor) -> View:
        strides = tensor.strides if tensor.strides is not None else _row_major(tensor.shape)
        return cls(tensor, tensor.offset, tensor.shape, strides)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> str:
        return self.tensor.value_dtype

    def _with(self, step: str, **changes: Any) -> View:
        return replace(self, steps=self.steps + (step,), **changes)

    def _error(self, message: str) -> ConversionError:
        return ConversionError(message, tensor=self.tensor.name)

    def permute(self, *order: int) -> View:
        if sorted(order) != list(range(self.ndim)):
            raise self._error(f"permute{order} does not fit {self.ndim} dims")
        return self._with(f"permute{tuple(order)}", shape=tuple(self.shape[d] for d in order),
                          strides=tuple(self.strides[d] for d in order))

    def transpose(self, a: int = 0, b: int = 1) -> View:
        order = list(range(self.ndim))
        order[a], order[b] = order[b], order[a]
        return self.permute(*order)._with_last_step(f"transpose({a},{b})")

    def _with_last_step(self, step: str) -> View:
        return replace(self, steps=self.steps[:-1] + (step,))

    def slice(self, dim: int, start: int, stop: int) -> View:
        n = self.shape[dim]
        if not 0 <= start <= stop <= n:
            raise self._error(f"slice [{start}:{stop}] of dim {dim} outside its {n} entries")
        shape = self.shape[:dim] + (stop - start,) + self.shape[dim + 1:]
        return self._with(f"[{start}:{stop}]@{dim}", offset=self.offset + start * self.strides[dim], shape=shape)

    def split(self, dim: int, sizes: list[int]) -> list[View]:
        if sum(sizes) != self.shape[dim]:
            raise self._error(f"split {sizes} does not add up to dim {dim} = {self.shape[dim]}")
        out, at = [], 0
        for s in sizes:
            out.append(self.slice(dim, at, at + s))
            at += s
        return out

    def reshape(self, *shape: int) -> View:
        """Reshape without copying (numpy's rule); raises when the strides do not allow it."""
        if math.prod(shape) != self.numel:
            raise self._error(f"cannot reshape {self.shape} to {shape}")
        strides = _nocopy_strides(self.shape, self.strides, tuple(shape))
        if strides is None:
            raise self._error(f"reshape {self.shape} -> {shape} would need a copy")
        return self._with(f"reshape{tuple(shape)}", shape=tuple(shape), strides=strides)

    def describe(self) -> str:
        scale = self.tensor.scale
        dequantized = f" · × {scale.tensor.name}[{'×'.join(map(str, scale.block))}]" if scale else ""
        merged = "".join(f" + {u.factor:g}·{u.b.name}@{u.a.name}" for u in self.tensor.updates)
        return self.tensor.name + dequantized + merged + "".join(f" · {s}" for s in self.steps)


def _nocopy_strides(old: tuple[int, ...], old_strides: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...] | None:
    if math.prod(old) == 0:
        return _row_major(new)
    dims = [(n, s) for n, s in zip(old, old_strides) if n != 1]
    new_strides = [0] * len(new)
    new_idx = [i for i, n in enumerate(new) if n != 1]
    oi = ni = 0
    while oi < len(dims) and ni < len(new_idx):
        o_end, n_end = oi + 1, ni + 1
        o_size, n_size = dims[oi][0], new[new_idx[ni]]
        while o_size != n_size:
            if n_size < o_size:
                n_size *= new[new_idx[n_end]]
                n_end += 1
            else:
                o_size *= dims[o_end][0]
                o_end += 1
        for k in range(oi, o_end - 1):  # the merged old dims must be contiguous among themselves
            if dims[k][1] != dims[k + 1][0] * dims[k + 1][1]:
                return None
        stride = dims[o_end - 1][1]
        for k in range(n_end - 1, ni - 1, -1):
            new_strides[new_idx[k]] = stride
            stride *= new[new_idx[k]]
        oi, ni = o_end, n_end
    for i in range(len(new) - 1, -1, -1):  # size-1 dims take any stride; keep them row-major-like
        if new[i] == 1:
            new_strides[i] = new_strides[i + 1] * new[i + 1] if i + 1 < len(new) else 1
    return tuple(new_strides)


@dataclass(frozen=True)
class BitField:
    """A u8 view's bytes read as ``(((x >> shift) & (2**bits - 1)) + offset) * scale``: low-bit codes
    packed several to a byte (transformers' BitNet checkpoints, I2_S), one part per field."""

    shift: int
    bits: int = 2
    offset: float = -1.0
    scale: float = 1.0

    def describe(self) -> str:
        return f"bits {self.shift}..{self.shift + self.bits - 1} {self.offset:+g} ×{self.scale:g}"


@dataclass(frozen=True)
class Part:
    view: View
    at: tuple[int, ...]  # start of the view's box in the tensor's layout
    field: BitField | None = None


@dataclass(frozen=True)
class Op:
    kind: Literal["add", "ternarize_absmean"]
    value: float = 0.0
    keep_if_ternary: bool = True
    round_to: str = "f32"

    def describe(self) -> str:
        if self.kind == "add":
            return f"{self.value:+g}"
        return "ternarize(absmean" + (", keep if ternary" if self.keep_if_ternary else "") + ")"


@dataclass
class OutTensor:
    """One output tensor: parts placed in ``layout`` (same elements as ``shape``), then ops, then
    cast or quantize to ``dtype``. Elements no part covers are zero."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    parts: list[Part]
    layout: tuple[int, ...] = ()
    ops: list[Op] = field(default_factory=list)
    file: int = 0
    note: str = ""          # why this type or recipe, shown by --dry-run
    offset: int = 0         # raw files only: where the tensor's bytes go
    # quantized types: one row of column weights per matrix (an imatrix's), for the kernels that use them
    importance: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)
        self.layout = tuple(self.layout) if self.layout else self.shape
        if math.prod(self.layout) != math.prod(self.shape):
            raise ConversionError(f"layout {self.layout} and shape {self.shape} differ in size", tensor=self.name)

    @classmethod
    def from_view(cls, name: str, view: View, dtype: str, *, shape: tuple[int, ...] | None = None, note: str = "") -> OutTensor:
        return cls(name, shape or view.shape, dtype, [Part(view, (0,) * view.ndim)], view.shape, note=note)

    @classmethod
    def concat(cls, name: str, views: list[View], dim: int, dtype: str, *, note: str = "") -> OutTensor:
        first = views[0]
        for v in views[1:]:
            if v.ndim != first.ndim or any(a != b for d, (a, b) in enumerate(zip(v.shape, first.shape)) if d != dim):
                raise ConversionError(f"cannot concatenate {first.shape} and {v.shape} along dim {dim}", tensor=name)
        parts, at = [], 0
        for v in views:
            start = [0] * first.ndim
            start[dim] = at
            parts.append(Part(v, tuple(start)))
            at += v.shape[dim]
        shape = first.shape[:dim] + (at,) + first.shape[dim + 1:]
        return cls(name, shape, dtype, parts, shape, note=note)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return dtypes.nbytes(self.dtype, self.numel)

    @property
    def sources(self) -> list[SourceTensor]:
        return list(dict.fromkeys(p.view.tensor for p in self.parts))

    def recipe(self) -> str:
        pieces = [p.view.describe() + (f" · {p.field.describe()}" if p.field else "") for p in self.parts] or ["zeros"]
        text = " ‖ ".join(pieces)
        if self.layout != self.shape:
            text += f" · as {self.shape}"
        for op in self.ops:
            text += f" · {op.describe()}"
        in_types = {p.view.dtype for p in self.parts}
        if in_types != {self.dtype}:
            text += f" · {'quantize' if dtypes.is_quant(self.dtype) else 'cast'} {self.dtype}"
        return text


@dataclass
class OutFile:
    """A file the engine writes. ``name`` is relative to the output folder (or is the output file)."""

    name: str
    container: Literal["safetensors", "gguf", "raw"]
    metadata: dict[str, str] = field(default_factory=dict)
    kvs: list[tuple[str, int, Any]] = field(default_factory=list)
    alignment: int = 32
    size: int = 0
    blobs: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class Plan:
    files: list[OutFile]
    tensors: list[OutTensor]
    # small files Python writes itself (index.json, config.json, model card), by relative name
    side_files: dict[str, bytes] = field(default_factory=dict)
    # files the target writes after the engine ran (fingerprints), known by name up front
    late_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # the engine's per-tensor decisions on values (ternarization), once it ran
    reports: list[dict[str, Any]] = field(default_factory=list)
    # the model's architecture as the output records it (GGUF's .meta.json): the table's, or the source file's
    architecture: str | None = None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def input_bytes(self) -> int:
        seen = {id(s): s.nbytes for t in self.tensors for s in t.sources}
        return sum(seen.values())
