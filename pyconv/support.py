"""What pyconv converts, for people and scripts: one row per architecture table (and per family that only
exports Hugging Face folders), read from the tables themselves. ``pyconv archs`` prints the rows; README's
architecture line and the table in docs/convert-to-gguf.md are made from them (scripts/update_archs_docs.py)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass

from . import registry
from .plugins import ARCH_GROUP, FAMILY_GROUP, SOURCE_GROUP

HF_TO_GGUF = "HF → GGUF"
GGUF_TO_HF = "GGUF → HF"
TO_REMOTE_CODE = "checkpoint → HF (own modeling code)"


@dataclass(frozen=True)
class Row:
    name: str                       # the table (``--arch``), or the family when it has none
    family: str
    hf_classes: tuple[str, ...]
    gguf: tuple[str, ...]           # GGUF architectures written
    directions: tuple[str, ...]
    outtypes: tuple[str, ...]       # GGUF out types run in llama.cpp by the tests
    proof: str
    tests: tuple[str, ...]


def rows() -> list[Row]:
    """Every table, the families' in their order then the plugins' tables, and the families without one."""
    found: list[Row] = []
    owned: set[str] = set()
    for family in registry.families():
        exporter = family.hf_exporter
        for arch in family.archs:
            owned.add(arch.name)
            p = arch.proof
            directions = [HF_TO_GGUF] + ([GGUF_TO_HF] if arch.hf.names else []) + ([TO_REMOTE_CODE] if exporter else [])
            proofs = ([f"llama.cpp = {p.against}"] if p.outtypes else []) + (
                [f"GGUF → HF = {p.to_hf}"] if p.to_hf else []) + (
                [f"own-code HF folder = {exporter.proven}"] if exporter and exporter.proven else [])
            found.append(Row(arch.name, family.name, arch.hf_architectures, arch.gguf.names, tuple(directions),
                             p.outtypes, "; ".join(proofs) or "not proven", p.tests))
        if exporter and not family.archs:
            found.append(Row(family.name, family.name, (exporter.model_type,), (), (TO_REMOTE_CODE,), (),
                             f"own-code HF folder = {exporter.proven}" if exporter.proven else "not proven", ()))
    for name, arch in registry.catalog().tables.items():
        if name not in owned:
            found.append(Row(name, "", arch.hf_architectures, arch.gguf.names,
                             (HF_TO_GGUF, *([GGUF_TO_HF] if arch.hf.names else [])), arch.proof.outtypes,
                             "a plugin's table", arch.proof.tests))
    return found


def as_json(found: list[Row]) -> str:
    return json.dumps([asdict(r) for r in found], indent=2)


def as_text(found: list[Row]) -> str:
    cols = [(r.name, ", ".join(r.hf_classes), ", ".join(r.gguf) or "-", ", ".join(r.directions), ", ".join(r.outtypes) or "-")
            for r in found]
    head = ("table", "HF classes", "GGUF", "directions", "verified")
    widths = [max(len(x) for x in col) for col in zip(head, *cols)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in (head, *cols)]
    lines += ["", "how each is proven:"] + [f"  {r.name}: {r.proof}" for r in found]
    return "\n".join(lines)


def as_markdown(found: list[Row]) -> str:
    """The table of docs/convert-to-gguf.md."""
    lines = ["| table | Hugging Face classes | llama.cpp architecture | directions | out types verified | how |",
             "|---|---|---|---|---|---|"]
    for r in found:
        gguf_names = ", ".join(f"`{g}`" for g in r.gguf) or "-"
        lines.append(f"| {r.name} | {', '.join(r.hf_classes)} | {gguf_names} | {', '.join(r.directions)} | "
                     f"{', '.join(r.outtypes) or '-'} | {r.proof} |")
    return "\n".join(lines)


def readme_line(found: list[Row]) -> str:
    """README's architecture item, wrapped as the page is."""
    text = (f"- **Architectures:** {', '.join(r.name for r in found)}; more from other packages through the "
            f"`{FAMILY_GROUP}`, `{ARCH_GROUP}` and `{SOURCE_GROUP}` entry points (see "
            "[docs/architecture.md](docs/architecture.md)). `pyconv archs` lists each with how it is proven.")
    # a code span stays on one line
    wrapped = textwrap.wrap(text.replace("`pyconv archs`", "`pyconv\0archs`"), 100, subsequent_indent="  ",
                            break_on_hyphens=False, break_long_words=False)
    return "\n".join(wrapped).replace("\0", " ")


# the generated stretch of docs/convert-to-gguf.md lies between these lines
TABLE_BEGIN = "<!-- generated from the tables by scripts/update_archs_docs.py (pyconv archs --markdown) -->"
TABLE_END = "<!-- end of the generated table -->"
README_ITEM = "- **Architectures:**"


def with_docs_table(page: str, found: list[Row]) -> str:
    """docs/convert-to-gguf.md with its table made from ``found``."""
    head, _, rest = page.partition(TABLE_BEGIN + "\n")
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_BEGIN}\n{as_markdown(found)}\n{TABLE_END}{tail}"


def with_readme_line(page: str, found: list[Row]) -> str:
    """README.md with its architecture item (the item's first line and its indented continuation) made from ``found``."""
    lines = page.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(README_ITEM))
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return "\n".join([*lines[:start], readme_line(found), *lines[end:]])
