"""The registry: pyconv's own families come through its pyconv.families entry point (or, without its
installed metadata, from the same function), one package each, and the lookups answer from them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyconv import plugins, registry
from pyconv.archs.catalog import Catalog
from pyconv.errors import ConversionError
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
    assert [r.name for r in registry.readers()] == ["neobert", "lora", "native", "zero", "safetensors", "gguf", "dcp", "torch"]
    neobert = registry.hf_exporter_of("neobert")
    assert neobert is not None and [p.name for p in neobert.remote_code] == ["modeling_neobert.py", "rotary.py"]
    checks = registry.model_checks("nanomoe_gpt")
    assert checks is not None and registry.model_checks("llama") is None


LLAMA_NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
               "model.layers.0.mlp.gate_proj.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight"]


def test_the_most_specific_signature_is_guessed_whatever_the_order_of_the_tables() -> None:
    """A Gemma 2 state dict has Llama's names and two more norms: it is Gemma 2 in either table order."""
    gemma2 = [*LLAMA_NAMES, "model.layers.0.pre_feedforward_layernorm.weight", "model.layers.0.post_feedforward_layernorm.weight"]
    tables = registry.catalog().tables
    for order in (list(tables), list(reversed(tables))):
        catalog = Catalog({name: tables[name] for name in order})
        assert catalog.guess(LLAMA_NAMES).name == "llama"
        assert catalog.guess(gemma2).name == "gemma2"


def test_names_that_fit_two_families_equally_well_are_refused() -> None:
    both = [*LLAMA_NAMES, "model.layers.0.self_attn.k_proj.bias", "model.layers.0.self_attn.k_norm.weight"]
    with pytest.raises(ConversionError, match="the tensor names fit qwen2 and qwen3 equally well; pass --arch to choose"):
        registry.catalog().guess(both)
