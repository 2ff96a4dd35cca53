"""Cropping, concatenating and transposing plain recipes (``OutTensor``s laid out as their shape).

Fusing projections, cutting them apart, tensor-parallel slices and vocabulary padding are all boxes of
boxes: each part's view is cut to the box and moved, nothing is copied until the engine runs, and an
element no part covers stays zero (padding).
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ConversionError
from ..plan import OutTensor


def _plain(t: OutTensor) -> None:
    if t.layout != t.shape or t.ops:
        raise ConversionError("this recipe is laid out differently from its shape and cannot be regrouped", tensor=t.name)


def crop(t: OutTensor, dim: int, start: int, stop: int, name: str | None = None) -> OutTensor:
    """Rows ``[start, stop)`` of ``t`` along ``dim``; a stop past the end pads with zeros."""
    _plain(t)
    parts = []
    for p in t.parts:
        lo, hi = max(start, p.at[dim]), min(stop, p.at[dim] + p.view.shape[dim])
        if lo >= hi:
            continue
        view = p.view.slice(dim, lo - p.at[dim], hi - p.at[dim])
        at = p.at[:dim] + (lo - start,) + p.at[dim + 1:]
        parts.append(replace(p, view=view, at=at))
    shape = t.shape[:dim] + (stop - start,) + t.shape[dim + 1:]
    return OutTensor(name or t.name, shape, t.dtype, parts, shape, note=t.note)


def concat(name: str, tensors: list[OutTensor], dim: int) -> OutTensor:
    first = tensors[0]
    parts, at = [], 0
    for t in tensors:
        _plain(t)
        if len(t.shape) != len(first.shape) or any(a != b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != dim):
            raise ConversionError(f"cannot concatenate {first.shape} and {t.shape} along dim {dim}", tensor=name)
        parts += [replace(p, at=p.at[:dim] + (p.at[dim] + at,) + p.at[dim + 1:]) for p in t.parts]
        at += t.shape[dim]
    shape = first.shape[:dim] + (at,) + first.shape[dim + 1:]
    return OutTensor(name, shape, first.dtype, parts, shape, note=first.note)


def transpose(t: OutTensor) -> OutTensor:
    """The 2-d transpose; 1-d tensors (biases) are returned as they are."""
    _plain(t)
    if len(t.shape) < 2:
        return t
    parts = [replace(p, view=p.view.transpose(), at=(p.at[1], p.at[0], *p.at[2:])) for p in t.parts]
    shape = (t.shape[1], t.shape[0], *t.shape[2:])
    return replace(t, shape=shape, layout=shape, parts=parts)


def split_rows(t: OutTensor, names: list[str], rows: list[int]) -> list[OutTensor]:
    out, at = [], 0
    for name, n in zip(names, rows):
        out.append(crop(t, 0, at, at + n, name))
        at += n
    return out
