"""The registry: pyconv's own families come through its pyconv.families entry point (or, without its
installed metadata, from the same function), one package each, and the lookups answer from them."""

from __future__ import annotations

import subprocess
import sys

from pyconv import plugins, registry
from pyconv.families import builtin

from .conftest import REPO

PACKAGES = sorted(p.name for p in (REPO / "pyconv" / "families").iterdir() if (p / "__init__.py").is_file())


def test_builtin_families_come_through_pyconvs_entry_point() -> None:
    own = [ep for ep in plugins.group(plugins.FAMILY_GROUP) if plugins.is_own(ep)]
    assert [ep.value for ep in own] == ["pyconv.families:builtin"]
    assert [f.name for f in registry.families()] == [f.name for f in builtin()] == PACKAGES


def test_without_pyconvs_metadata_the_same_function_gives_them() -> None:
    code = ("import importlib.metadata as m; m.entry_points = lambda **_: []; from pyconv import registry; "
            "print(' '.join(f.name for f in registry.families()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split() == PACKAGES


def test_lookups() -> None:
    catalog = registry.catalog()
    assert catalog.for_gguf("bitnet-b1.58") is catalog.tables["bitnet"] and catalog.for_gguf("llama") is catalog.tables["llama"]
    assert [r.name for r in registry.readers()] == ["neobert", "lora", "native", "safetensors", "gguf", "zero", "torch"]
    neobert = registry.hf_exporter_of("neobert")
    assert neobert is not None and [p.name for p in neobert.remote_code] == ["modeling_neobert.py", "rotary.py"]
    checks = registry.model_checks("nanomoe_gpt")
    assert checks is not None and registry.model_checks("llama") is None
