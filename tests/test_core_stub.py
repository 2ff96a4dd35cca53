"""pyconv/_core.pyi, which mypy and editors read, describes the engine module that was built: the same
public names, and for each class the same public members. A binding added without its stub fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pyconv
from pyconv import _core

STUB = Path(pyconv.__file__).with_name("_core.pyi")


def _members(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def stub_api() -> dict[str, set[str] | None]:
    """Public module-level names of the stub; a class maps to its public members, anything else to None."""
    api: dict[str, set[str] | None] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            api[node.name] = _members(node)
        elif isinstance(node, ast.FunctionDef):
            api[node.name] = None
    return {k: v for k, v in api.items() if not k.startswith("_")}


def runtime_api() -> dict[str, set[str] | None]:
    api: dict[str, set[str] | None] = {}
    for name in dir(_core):
        if name.startswith("_"):
            continue
        obj = getattr(_core, name)
        api[name] = {m for m in vars(obj) if not m.startswith("_")} if isinstance(obj, type) else None
    return api


def test_stub_has_the_names_the_module_has() -> None:
    stub, runtime = stub_api(), runtime_api()
    assert sorted(stub) == sorted(runtime)
    for name, members in runtime.items():
        assert stub[name] == members, f"_core.{name}: stub and module differ in {sorted((stub[name] or set()) ^ (members or set()))}"
