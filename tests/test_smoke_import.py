"""``import pyconv`` is light and exposes the public names."""

import subprocess
import sys

import pyconv


def test_public_api() -> None:
    assert set(pyconv.__all__) >= {"ConversionError", "convert", "inspect", "__version__"}
    assert callable(pyconv.convert) and callable(pyconv.inspect)


def test_import_does_not_pull_torch_or_transformers() -> None:
    code = "import sys, pyconv; pyconv.convert; pyconv.inspect; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
