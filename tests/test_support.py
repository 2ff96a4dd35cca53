"""`pyconv archs`: every table listed with what proves it, README and docs made from the same rows, and an
unknown architecture named with the closest one pyconv has."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pyconv
from pyconv import registry, support

from .archs_fixtures import FAMILIES
from .conftest import REPO, run_cli


def test_archs_json_lists_every_table_with_its_proof() -> None:
    r = run_cli("archs", "--json")
    assert r.returncode == 0, r.stderr
    listed = {row["name"]: row for row in json.loads(r.stdout)}
    tables = registry.catalog().tables
    assert set(tables) <= set(listed)
    for name, arch in tables.items():
        row = listed[name]
        assert row["hf_classes"] == list(arch.hf_architectures) and row["gguf"] == list(arch.gguf.names)
        assert ("GGUF → HF" in row["directions"]) == bool(arch.hf.names)
        assert row["outtypes"] == list(arch.proof.outtypes)
    # families that only export HF folders with their own code are listed too
    assert listed["nanomoe"]["directions"] == [support.TO_REMOTE_CODE]


def test_archs_text_has_a_line_per_table() -> None:
    r = run_cli("archs")
    assert r.returncode == 0, r.stderr
    for row in support.rows():
        assert any(line.startswith(f"{row.name} ") for line in r.stdout.splitlines()), row.name
        assert f"  {row.name}: {row.proof}" in r.stdout


def test_claimed_out_types_are_the_ones_the_logits_tests_run() -> None:
    """A table's proof says which out types llama.cpp is checked at: for the tables of tests/test_archs_gguf.py
    that is what its cases run (the family harness runs the tables' own claims)."""
    tables = registry.catalog().tables
    for name, fam in FAMILIES.items():
        assert tables[name].proof.outtypes == fam.outtypes, name


def test_readme_and_docs_are_made_from_the_tables() -> None:
    """Run scripts/update_archs_docs.py when this fails."""
    found = support.rows()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert support.with_readme_line(readme, found) == readme
    page = (REPO / "docs" / "convert-to-gguf.md").read_text(encoding="utf-8")
    assert support.TABLE_BEGIN in page and support.TABLE_END in page
    assert support.with_docs_table(page, found) == page
    assert all(f"| {row.name} |" in page for row in found)


@pytest.mark.parametrize(("config", "closest"), [
    ({"architectures": ["LlamaForCausalLMv2"], "model_type": "llama_v2"}, "llama"),
    ({"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next"}, "qwen3"),
    ({"model_type": "gpt2_custom"}, "gpt2"),
])
def test_an_unknown_architecture_names_the_closest_table_and_the_plugin_way(config: dict[str, object], closest: str) -> None:
    with pytest.raises(pyconv.ConversionError) as e:
        registry.catalog().detect(config, [])
    message = str(e.value)
    assert "\n" not in message
    assert f"the closest pyconv has is '{closest}'" in message
    assert "'pyconv.families' entry point" in message and "--arch" in message


def test_the_cli_says_it_in_one_line(tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["Gemma4ForCausalLM"], model_type="gemma4_text")
    (folder / "config.json").write_text(json.dumps(config))
    r = run_cli("convert", folder, "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and not (tmp_path / "x.gguf").exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "['Gemma4ForCausalLM']" in lines[0] and "closest pyconv has is 'gemma" in lines[0]


def test_an_unknown_arch_flag_names_the_closest_table() -> None:
    with pytest.raises(pyconv.ConversionError, match="--arch lama is not supported; the closest pyconv has is 'llama'"):
        registry.catalog().named("lama")
