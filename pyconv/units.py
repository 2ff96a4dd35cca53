"""Human sizes: parsing ``5GB`` / ``2G`` / ``500MiB`` and printing byte counts."""

from __future__ import annotations

import re

from .errors import ConversionError

_UNITS = {
    "": 1, "B": 1,
    "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(text: str) -> int:
    """Decimal units as transformers and llama.cpp read them (5GB = 5e9); KiB/MiB/GiB are binary."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise ConversionError(f"cannot read size '{text}' (examples: 5GB, 2G, 500MB, 1GiB)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConversionError(f"size '{text}' must be positive")
    return value


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
