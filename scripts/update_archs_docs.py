"""Rewrites README's architecture item and the table in docs/convert-to-gguf.md from the architecture tables
(what ``pyconv archs`` lists), after a family is added or its proof changes:

    .venv/bin/python scripts/update_archs_docs.py

tests/test_support.py fails while either page is out of step with the tables.
"""

from __future__ import annotations

from pathlib import Path

from pyconv import support

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    found = support.rows()
    for page, update in ((REPO / "README.md", support.with_readme_line),
                         (REPO / "docs" / "convert-to-gguf.md", support.with_docs_table)):
        text = page.read_text(encoding="utf-8")
        new = update(text, found)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"updated {page.relative_to(REPO)}")
