"""llama.cpp's own converter (convert_hf_to_gguf.py + its gguf-py), fetched from the
llama-cpp-python source package on PyPI and unpacked under bench-data/ (never committed)."""

from __future__ import annotations

import re
import tarfile
import urllib.request
from pathlib import Path

from ..errors import ConversionError

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
MEMBERS = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")


def reference_converter(root: Path) -> Path:
    """Path of convert_hf_to_gguf.py, downloading the sdist on first use."""
    folder = root / f"llama.cpp-converter-{VERSION}"
    script = folder / "convert_hf_to_gguf.py"
    if script.exists():
        return script
    name = f"llama_cpp_python-{VERSION}.tar.gz"
    sdist = root / name
    if not sdist.exists():
        with urllib.request.urlopen(f"https://pypi.org/simple/{PACKAGE}/", timeout=60) as r:
            index = r.read().decode()
        url = re.search(rf'href="([^"#]*{re.escape(name)})', index)
        if url is None:
            raise ConversionError(f"{name} is not on PyPI's simple index")
        urllib.request.urlretrieve(url.group(1), sdist)
    prefix = f"llama_cpp_python-{VERSION}/"
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else ""
            if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in MEMBERS) and (m.isfile() or m.isdir()):
                m.name = rel[len("vendor/llama.cpp/"):]
                tar.extract(m, folder, filter="data")
    return script
