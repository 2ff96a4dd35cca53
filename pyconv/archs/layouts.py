"""The table types for the Hugging Face side of a family: HF names of GGUF tensors, and the fused
trainer layout (how its rows regroup against HF's).

Both are data read by generic code in both directions: the HF target maps GGUF names back through
``HfName``; the native target and reader move between HF's tensors and the trainer's fused ones
through ``Regroup``, as views, so a round trip is bit-exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConversionError


@dataclass(frozen=True)
class HfName:
    """The HF tensor a GGUF tensor kind becomes: ``template`` ({bid} the block; the GGUF name's .weight
    or .bias follows unless ``bare``, a plain parameter), or part ``part`` of ``of`` equal parts along
    ``dim`` of it (transformers 5 keeps some experts fused)."""

    template: str
    dim: int = 0
    part: int = 0
    of: int = 1
    bare: bool = False


# Row counts of the pieces of a regrouped tensor, in units read from the config
UNITS = {
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


def template_pattern(template: str) -> re.Pattern[str]:
    """Matches the .weight/.bias tensors of a {bid} template; groups ``bid`` and ``suffix``."""
    return re.compile("^" + re.escape(template).replace(r"\{bid\}", r"(?P<bid>\d+)") + r"(?P<suffix>\.weight|\.bias)$")


def row_counts(pieces: tuple[Piece, ...], total: int, cfg: Mapping[str, Any], what: str) -> list[int]:
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
