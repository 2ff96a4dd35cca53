"""The native part of a family's table: the trainer's fused layout, how its rows regroup against HF's.

Generic code reads it both ways: the native target and reader move between HF's tensors and the
trainer's fused ones through ``Regroup``, as views, so a round trip is bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConversionError
from .config import Config

# Row counts of the pieces of a regrouped tensor, in units read from the config
UNITS: dict[str, Callable[[Config], int]] = {
    "one": lambda cfg: 1,
    "heads": lambda cfg: int(cfg.require("num_attention_heads", "n_head")),
    "kv_heads": lambda cfg: int(cfg.find("num_key_value_heads", "n_kv_heads") or cfg.require("num_attention_heads", "n_head")),
}


@dataclass(frozen=True)
class Piece:
    """One tensor of a regrouped stretch: ``name`` ({bid}, no suffix) holding ``units`` shares of its rows."""

    name: str
    units: tuple[str, ...] = ("one",)


@dataclass(frozen=True)
class Regroup:
    """The HF pieces, concatenated along dim 0 (each transposed first when HF stores the weight [in, out]),
    hold the same rows as the fused pieces concatenated. Applies to ``.weight`` and, when present, ``.bias``."""

    hf: tuple[Piece, ...]
    fused: tuple[Piece, ...]
    transposed: bool = False


def row_counts(pieces: tuple[Piece, ...], total: int, cfg: Config, what: str) -> list[int]:
    """Rows of each piece when together they hold ``total`` rows."""
    shares = [sum(UNITS[u](cfg) for u in p.units) for p in pieces]
    whole = sum(shares)
    if total % whole:
        raise ConversionError(f"{total} rows do not split into shares {shares} (config heads vs weights)", tensor=what)
    return [total // whole * s for s in shares]


def regroup(hf: tuple[str, ...], fused: tuple[str, ...], *, fused_units: tuple[tuple[str, ...], ...] | None = None,
            hf_units: tuple[tuple[str, ...], ...] | None = None, transposed: bool = False) -> Regroup:
    """A Regroup from names, each piece one share unless units are given."""
    hu = hf_units or tuple(("one",) for _ in hf)
    fu = fused_units or tuple(("one",) for _ in fused)
    return Regroup(tuple(Piece(n, u) for n, u in zip(hf, hu)), tuple(Piece(n, u) for n, u in zip(fused, fu)), transposed)


@dataclass(frozen=True)
class NativeLayout:
    """How the family's trainer fuses HF's tensors (``--to native --layout fused``)."""

    fused: tuple[Regroup, ...] = ()
