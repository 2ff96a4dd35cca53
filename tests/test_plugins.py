"""Plugins: a tiny package written here, installed with pip into a folder of its own (never into the
venv), gives pyconv an architecture table and a source reader through entry points; pyconv converts
with each in a fresh process that has the folder on PYTHONPATH. Broken plugins are errors naming them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from .conftest import run_cli
from .corpus import Workshop, tiny_llama

PLUGIN = '''
"""A pyconv plugin: LLaMA's table under another class name, and a reader for folders of raw tensor files."""

import json
from dataclasses import replace
from pathlib import Path

from pyconv.families.llama import LLAMA
from pyconv.sources import Reader, Segment, SourceTensor, StateDictCheckpoint

TOY_LLAMA = replace(LLAMA, name="toyllama", hf_architectures=("ToyLlamaForCausalLM",), model_types=("toyllama",))


class RawDir(StateDictCheckpoint):
    format_name = "rawdir"


def recognises(path: Path) -> bool:
    return path.is_dir() and (path / "tensors.json").is_file()


def open_raw(path: Path, _options: object) -> RawDir:
    tensors = {}
    for name, spec in json.loads((path / "tensors.json").read_text()).items():
        data = path / spec["file"]
        tensors[name] = SourceTensor(name, spec["dtype"], tuple(spec["shape"]), (Segment(data, spec.get("offset", 0), spec["bytes"]),))
    return RawDir(path, tensors, sorted({s.path for t in tensors.values() for s in t.segments}))


RAW = Reader("rawdir", recognises, open_raw)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1"

[project.entry-points."pyconv.archs"]
{archs}

[project.entry-points."pyconv.sources"]
{sources}

[tool.setuptools]
py-modules = ["{module}"]
'''


def install(root: Path, name: str, module: str, code: str, archs: str = "", sources: str = "") -> Path:
    """Write a one-module package and pip-install it into ``root/name-site``; returns that folder."""
    src = root / name
    src.mkdir()
    (src / f"{module}.py").write_text(textwrap.dedent(code))
    (src / "pyproject.toml").write_text(PYPROJECT.format(name=name, module=module, archs=archs, sources=sources))
    site = root / f"{name}-site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (site / f"{module}.py").exists() and any(site.glob(f"{name.replace('-', '_')}-0.1.dist-info/entry_points.txt"))
    return site


def with_plugin(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("plugins"), "pyconv-toy-plugin", "pyconv_toy_plugin", PLUGIN,
                   archs='toyllama = "pyconv_toy_plugin:TOY_LLAMA"', sources='rawdir = "pyconv_toy_plugin:RAW"')


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugin-models")


def test_the_plugins_architecture_converts(plugin: Path, shared: Path, tmp_path: Path) -> None:
    toy = tiny_llama(Workshop(tmp_path / "toy", shared), {"architectures": ["ToyLlamaForCausalLM"], "model_type": "toyllama"})
    plain = tiny_llama(Workshop(tmp_path / "plain", shared))
    r = run_cli("convert", toy, "-o", tmp_path / "toy.gguf", "--name", "m", "-q")
    assert r.returncode == 1 and "['ToyLlamaForCausalLM'] is not supported" in r.stderr  # pyconv alone does not know it
    r = run_cli("convert", toy, "-o", tmp_path / "toy.gguf", "--name", "m", "-q", env=with_plugin(plugin))
    assert r.returncode == 0, r.stderr
    assert run_cli("convert", plain, "-o", tmp_path / "plain.gguf", "--name", "m", "-q").returncode == 0
    ours, reference = gguf.GGUFReader(tmp_path / "toy.gguf"), gguf.GGUFReader(tmp_path / "plain.gguf")
    assert bytes(ours.fields["general.architecture"].parts[-1]) == b"llama"
    assert [(t.name, bytes(t.data)) for t in ours.tensors] == [(t.name, bytes(t.data)) for t in reference.tensors]
    r = run_cli("convert", plain, "-o", tmp_path / "forced.gguf", "--arch", "toyllama", "-q", env=with_plugin(plugin))
    assert r.returncode == 0, r.stderr


def test_the_plugins_reader_converts(plugin: Path, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    rng = np.random.default_rng(5)
    arrays = {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "b.bias": rng.standard_normal(5).astype(np.float16)}
    blob = arrays["a.weight"].tobytes() + arrays["b.bias"].tobytes()
    (folder / "weights.bin").write_bytes(blob)
    (folder / "tensors.json").write_text(json.dumps({
        "a.weight": {"file": "weights.bin", "dtype": "f32", "shape": [3, 4], "bytes": 48},
        "b.bias": {"file": "weights.bin", "dtype": "f16", "shape": [5], "offset": 48, "bytes": 10}}))
    # alone, pyconv takes the folder's one .bin file for a torch checkpoint: the plugin's reader is asked first
    assert "weights.bin: not a torch checkpoint" in run_cli("inspect", folder).stderr
    r = run_cli("inspect", folder, "--json", env=with_plugin(plugin))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "rawdir"
    out = tmp_path / "out.safetensors"
    r = run_cli("convert", folder, "-o", out, "--outtype", "f32", "-q", env=with_plugin(plugin))
    assert r.returncode == 0, r.stderr
    got = load_file(out)
    assert np.array_equal(got["a.weight"], arrays["a.weight"]) and np.array_equal(got["b.bias"], arrays["b.bias"].astype(np.float32))


BROKEN = [
    ("import", "import no_such_module_anywhere\nTABLE = None\n", 'broken = "{module}:TABLE"', "",
     "plugin 'broken' (pyconv.archs = {module}:TABLE, package {name} 0.1) cannot be loaded: ModuleNotFoundError"),
    ("type", "TABLE = {'name': 'x'}\n", 'broken = "{module}:TABLE"', "",
     "plugin 'broken' (pyconv.archs = {module}:TABLE, package {name} 0.1) gives a dict, not an Arch"),
    ("clash", "from dataclasses import replace\nfrom pyconv.families.llama import LLAMA\nTABLE = replace(LLAMA)\n",
     'broken = "{module}:TABLE"', "", "names its architecture 'llama', which pyconv already has"),
    ("reader-raises", "from pyconv.sources import Reader\nREADER = Reader('x', lambda p: True, lambda p, o: 1 / 0)\n", "",
     'broken = "{module}:READER"', "failed to read it: ZeroDivisionError: division by zero"),
    ("reader-lies", PLUGIN, "", 'broken = "{module}:RAW"', "places it at bytes [0, 4096) of"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_plugins_are_named(case: tuple[str, str, str, str, str], shared: Path, tmp_path: Path) -> None:
    kind, code, archs, sources, message = case
    name, module = f"pyconv-broken-{kind}", f"broken_{kind.replace('-', '_')}"
    site = install(tmp_path, name, module, code, archs.format(module=module), sources.format(module=module))
    model = tiny_llama(Workshop(tmp_path / "model", shared))
    if kind == "reader-lies":
        (model / "tensors.json").write_text(json.dumps({"w": {"file": "config.json", "dtype": "f32", "shape": [1024], "bytes": 4096}}))
    r = run_cli("convert", model, "-o", tmp_path / "out.gguf", "-q", env=with_plugin(site))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyconv: error: ") and message.format(module=module, name=name) in lines[0], lines
    assert not (tmp_path / "out.gguf").exists()
