"""Rewrites pyconv/_core.pyi from the built extension: pybind11-stubgen's stub, then the changes that
make it say what the bindings accept (a type name wherever a DType is taken, any buffer where bytes
are read, CoreError's fields). Run after changing csrc/bindings.cpp:

    .venv/bin/python scripts/update_core_stub.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

STUB = Path(__file__).resolve().parent.parent / "pyconv" / "_core.pyi"


def generated() -> str:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "pybind11_stubgen", "pyconv._core", "--enum-class-locations", "DType:pyconv._core",
                        "--exit-code", "-o", out], check=True)
        return (Path(out) / "pyconv" / "_core.pyi").read_text()


def adjusted(stub: str) -> str:
    stub = stub.replace("import typing_extensions\n", "")
    stub = stub.replace("__all__: list[str]", "# Anything the buffer protocol exposes as contiguous bytes (numpy arrays included).\n"
                        "_Buffer: typing.TypeAlias = bytes | bytearray | memoryview | numpy.ndarray\n__all__: list[str]", 1)
    stub = stub.replace("typing_extensions.Buffer", "_Buffer")
    stub = re.sub(r"class CoreError\(RuntimeError\):\n(    .*\n)+",
                  "class CoreError(RuntimeError):\n    message: str\n    tensor: int | None\n    file: str | None\n", stub)
    # a DType parameter takes a type name too (py::implicitly_convertible<py::str, DType>)
    stub = re.sub(r"(\w+: )DType([,)])", r"\1DType | str\2", stub)
    stub = stub.replace("def __eq__(self, other: DType | str)", "def __eq__(self, other: DType)")
    stub = stub.replace("def __ne__(self, other: DType | str)", "def __ne__(self, other: DType)")
    return "\n".join(line.rstrip() for line in stub.splitlines()) + "\n"


if __name__ == "__main__":
    STUB.write_text(adjusted(generated()))
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "-q", str(STUB)], check=True)
