"""llama.cpp's own converter (convert_hf_to_gguf.py + its gguf-py), fetched from the
llama-cpp-python source package and unpacked in the benchmark's data folder."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import ConversionError

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
MEMBERS = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")


def source_package(root: Path) -> Path:
    """llama-cpp-python's sdist in ``root``, downloaded on first use from the package index pip is
    configured with (``PIP_INDEX_URL``, else PyPI)."""
    name = f"llama_cpp_python-{VERSION}.tar.gz"
    sdist = root / name
    root.mkdir(parents=True, exist_ok=True)
    if not sdist.exists():
        index_url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + f"/{PACKAGE}/"
        with urllib.request.urlopen(index_url, timeout=60) as r:
            index = r.read().decode()
        href = re.search(rf'href="([^"#]*{re.escape(name)})', index)
        if href is None:
            raise ConversionError(f"{name} is not on the package index {index_url}")
        partial = sdist.with_name(name + ".partial")
        urllib.request.urlretrieve(urllib.parse.urljoin(index_url, href.group(1)), partial)
        partial.rename(sdist)
    return sdist


def reference_converter(root: Path) -> Path:
    """Path of convert_hf_to_gguf.py, from the sdist (downloaded on first use)."""
    folder = root / f"llama.cpp-converter-{VERSION}"
    script = folder / "convert_hf_to_gguf.py"
    if script.exists():
        return script
    prefix = f"llama_cpp_python-{VERSION}/"
    unpacking = folder.with_name(folder.name + ".partial")
    shutil.rmtree(unpacking, ignore_errors=True)
    with tarfile.open(source_package(root)) as tar:
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else ""
            if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in MEMBERS) and (m.isfile() or m.isdir()):
                m.name = rel[len("vendor/llama.cpp/"):]
                tar.extract(m, unpacking, filter="data")
    unpacking.rename(folder)
    return script
