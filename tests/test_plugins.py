"""Plugins: tiny packages written here, installed with pip into a folder of their own (never into the
venv), give pyconv an architecture table and a source reader, or a whole family, through entry points;
pyconv converts with each in a fresh process that has the folder on PYTHONPATH. Broken plugins are
errors naming them."""

from __future__ import annotations

import json
import os
import shutil
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

[project.entry-points."pyconv.families"]
{families}

[tool.setuptools]
{layout}
'''


def install(root: Path, name: str, module: str, code: str, archs: str = "", sources: str = "", families: str = "",
            data: dict[str, str] | None = None) -> Path:
    """Write a one-module package (with ``data``: a package holding those files too) and pip-install it into
    ``root/name-site``; returns that folder."""
    src = root / name
    src.mkdir()
    if data is None:
        (src / f"{module}.py").write_text(textwrap.dedent(code))
        layout = f'py-modules = ["{module}"]'
    else:
        for file, text in {"__init__.py": code, **data}.items():
            (src / module / file).parent.mkdir(parents=True, exist_ok=True)
            (src / module / file).write_text(textwrap.dedent(text))
        layout = f'packages = ["{module}"]\npackage-data = {{"{module}" = {sorted(set(data))!r}}}'.replace("'", '"')
    (src / "pyproject.toml").write_text(PYPROJECT.format(name=name, archs=archs, sources=sources, families=families,
                                                         layout=layout))
    site = root / f"{name}-site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert any(site.glob(f"{name.replace('-', '_')}-0.1.dist-info/entry_points.txt"))
    assert all((site / module / file).is_file() for file in data or {}) if data else (site / f"{module}.py").exists()
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
    assert r.returncode == 1 and "architecture ['ToyLlamaForCausalLM'] (model_type 'toyllama') is not supported" in r.stderr  # pyconv alone does not know it
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
    ("import", "import no_such_module_anywhere\nTABLE = None\n", "archs", 'broken = "{module}:TABLE"',
     "plugin 'broken' (pyconv.archs = {module}:TABLE, package {name} 0.1) cannot be loaded: ModuleNotFoundError"),
    ("type", "TABLE = {'name': 'x'}\n", "archs", 'broken = "{module}:TABLE"',
     "plugin 'broken' (pyconv.archs = {module}:TABLE, package {name} 0.1) gives a dict, not an Arch"),
    ("clash", "from dataclasses import replace\nfrom pyconv.families.llama import LLAMA\nTABLE = replace(LLAMA)\n",
     "archs", 'broken = "{module}:TABLE"', "names its architecture 'llama', which pyconv already has"),
    ("reader-raises", "from pyconv.sources import Reader\nREADER = Reader('x', lambda p: True, lambda p, o: 1 / 0)\n",
     "sources", 'broken = "{module}:READER"', "failed to read it: ZeroDivisionError: division by zero"),
    ("reader-lies", PLUGIN, "sources", 'broken = "{module}:RAW"', "places it at bytes [0, 4096) of"),
    ("family-type", "FAMILY = {'name': 'x'}\n", "families", 'broken = "{module}:FAMILY"',
     "plugin 'broken' (pyconv.families = {module}:FAMILY, package {name} 0.1) gives a dict, not a Family"),
    ("family-clash", "from pyconv.family import Family\nFAMILY = Family('llama')\n", "families", 'broken = "{module}:FAMILY"',
     "names its family 'llama', which pyconv already has"),
    ("family-table-clash", "from dataclasses import replace\nfrom pyconv.family import Family\n"
     "from pyconv.families.llama import LLAMA\nFAMILY = Family('mine', archs=(replace(LLAMA),))\n", "families", 'broken = "{module}:FAMILY"',
     "plugin 'broken' (pyconv.families = {module}:FAMILY, package {name} 0.1) names its architecture 'llama'"),
    ("family-reader-raises", "from pyconv.family import Family\nfrom pyconv.sources import Reader\n"
     "FAMILY = Family('mine', readers=(Reader('x', lambda p: True, lambda p, o: 1 / 0),))\n", "families",
     'broken = "{module}:FAMILY"', "(pyconv.families = {module}:FAMILY, package {name} 0.1) failed to read it: ZeroDivisionError"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_plugins_are_named(case: tuple[str, str, str, str, str], shared: Path, tmp_path: Path) -> None:
    kind, code, group, entry, message = case
    name, module = f"pyconv-broken-{kind}", f"broken_{kind.replace('-', '_')}"
    site = install(tmp_path, name, module, code, **{group: entry.format(module=module)})
    model = tiny_llama(Workshop(tmp_path / "model", shared))
    if kind == "reader-lies":
        (model / "tensors.json").write_text(json.dumps({"w": {"file": "config.json", "dtype": "f32", "shape": [1024], "bytes": 4096}}))
    r = run_cli("convert", model, "-o", tmp_path / "out.gguf", "-q", env=with_plugin(site))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyconv: error: ") and message.format(module=module, name=name) in lines[0], lines
    assert not (tmp_path / "out.gguf").exists()


FAMILY_PLUGIN = '''
"""A pyconv plugin family: "toyfam", a Llama-shaped model under its own class, whose trainer keeps the
weights under "net." beside a toyfam.json, exported to HF with its own modeling code and checked by
pyconv validate."""

import json
from pathlib import Path

from pyconv.archs import llama_like
from pyconv.families.llama import LLAMA_GGUF
from pyconv.family import Family, HfExporter, ModelChecks
from pyconv.plan import OutTensor, View
from pyconv.sources import Reader
from pyconv.sources.safetensors import open_safetensors
from pyconv.sources.state_dict import StateDictCheckpoint
from pyconv.targets.hf_model import HfTensors

TOYFAM = llama_like("toyfam", "ToyFamForCausalLM", LLAMA_GGUF)
AUTO_MAP = {"AutoConfig": "configuration_toyfam.ToyFamConfig", "AutoModelForCausalLM": "modeling_toyfam.ToyFamForCausalLM"}
REMOTE_CODE = tuple(Path(__file__).parent / "remote_code" / n for n in ("configuration_toyfam.py", "modeling_toyfam.py"))


class ToyRun(StateDictCheckpoint):
    format_name = "toyfam"


def recognises(path: Path) -> bool:
    return path.is_dir() and (path / "toyfam.json").is_file()


def open_run(path: Path, _options: object) -> ToyRun:
    weights = open_safetensors(path / "weights.safetensors")
    weights.strip_prefixes(("net.",))
    config = {**json.loads((path / "toyfam.json").read_text()), "architectures": ["ToyFamForCausalLM"], "model_type": "toyfam"}
    return ToyRun(path, weights.tensors, weights.files, config=config)


def export(ck: StateDictCheckpoint, _options: object) -> HfTensors:
    config = {**(ck.config or {}), "auto_map": AUTO_MAP}
    tensors = [OutTensor.from_view(n, View.of(t), t.dtype) for n, t in ck.tensors.items()]
    return HfTensors(tensors, TOYFAM, config, ["toyfam run exported"])


def usage(_config: dict, _files: dict) -> list:
    return ["## How to use it", "", "Load it with trust_remote_code=True (toyfam's own code).", ""]


def check(_folder: Path, model: object, _ids: object, report: object) -> None:
    report.add("toyfam", "pass", f"the toy family's check ran on {type(model).__name__}")


FAMILY = Family("toyfam", archs=(TOYFAM,), readers=(Reader("toyfam", recognises, open_run),),
                hf_exporter=HfExporter("toyfam", lambda ck: isinstance(ck, ToyRun), export, usage, REMOTE_CODE),
                checks=ModelChecks(("toyfam",), check))
'''

TOYFAM_CODE = {
    "remote_code/configuration_toyfam.py": '''
from transformers import LlamaConfig


class ToyFamConfig(LlamaConfig):
    model_type = "toyfam"
''',
    "remote_code/modeling_toyfam.py": '''
from transformers import LlamaForCausalLM

from .configuration_toyfam import ToyFamConfig


class ToyFamForCausalLM(LlamaForCausalLM):
    config_class = ToyFamConfig
''',
}


def test_a_plugin_family_converts_and_validates(shared: Path, tmp_path: Path) -> None:
    """A whole family through the public registration only: its table, its trainer's layout, its HF export
    with modeling code and its validate check, as pyconv's own families bring them."""
    from safetensors.numpy import load_file, save_file

    site = install(tmp_path, "pyconv-toy-family", "pyconv_toy_family", FAMILY_PLUGIN,
                   families='toyfam = "pyconv_toy_family:FAMILY"', data=TOYFAM_CODE)
    plain = tiny_llama(Workshop(tmp_path / "plain", shared))
    run = tmp_path / "run"
    run.mkdir()
    save_file({f"net.{k}": v for k, v in load_file(plain / "model.safetensors").items()}, str(run / "weights.safetensors"))
    config = json.loads((plain / "config.json").read_text())
    (run / "toyfam.json").write_text(json.dumps({k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
    shutil.copy(plain / "tokenizer.model", run / "tokenizer.model")

    r = run_cli("convert", run, "-o", tmp_path / "toy.gguf", "--name", "m", "-q")
    assert r.returncode == 1 and "config.json" in r.stderr  # pyconv alone takes the folder for plain safetensors
    r = run_cli("inspect", run, "--json", env=with_plugin(site))
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "toyfam", r.stderr

    r = run_cli("convert", run, "-o", tmp_path / "toy.gguf", "--name", "m", "-q", env=with_plugin(site))
    assert r.returncode == 0, r.stderr
    assert run_cli("convert", plain, "-o", tmp_path / "plain.gguf", "--name", "m", "-q").returncode == 0
    ours, reference = gguf.GGUFReader(tmp_path / "toy.gguf"), gguf.GGUFReader(tmp_path / "plain.gguf")
    assert [(t.name, bytes(t.data)) for t in ours.tensors] == [(t.name, bytes(t.data)) for t in reference.tensors]

    folder = tmp_path / "toy-hf"
    r = run_cli("convert", run, "-o", folder, "--to", "hf", "-q", env=with_plugin(site))
    assert r.returncode == 0, r.stderr
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == "modeling_toyfam.ToyFamForCausalLM"
    assert (folder / "modeling_toyfam.py").read_text() == textwrap.dedent(TOYFAM_CODE["remote_code/modeling_toyfam.py"])
    assert "toyfam's own code" in (folder / "README.md").read_text()
    r = run_cli("validate", folder, "--json", env=with_plugin(site))
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["load"]["status"] == "pass" and checks["custom code"]["status"] == "pass", checks
    assert checks["toyfam"] == {"name": "toyfam", "status": "pass", "detail": "the toy family's check ran on ToyFamForCausalLM",
                                "data": {}}, checks
