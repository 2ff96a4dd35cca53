"""Every ``pyconv …`` command in the fenced blocks of README.md and docs/*.md, run as printed.

Commands are read from the files when the tests are collected, so a command added to a page is run
without touching this file. Each runs in a fresh folder holding the inputs it names, made by the table
INPUTS below from real models (SmolLM2-135M, the test fixtures of each family); a command naming an
input the table does not know fails, saying so. A usage line (``pyconv convert SRC -o OUT [--to …]``)
is run in its required form, and every option its brackets name must be one the command has.
``pyconv bench`` commands run their jobs on the tiny shape, one round each.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import pyconv
from pyconv.bench.reference import VERSION
from pyconv.cli import build_parser

from .conftest import REPO
from .corpus import Workshop, tiny_llama, write_dcp, write_zero

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# what the docs' shell variables and usage placeholders stand for
DOC_ENV = {"MODEL_DIR": "hf_model", "OUT_DIR": "export"}
PLACEHOLDERS = {"SRC": "hf_model", "OUT": "out.gguf", "PATH": "model.gguf", "HF_DIR": "hf_model"}
# argparse destinations that name files the command reads
INPUT_ARGS = ("source", "path", "reference", "tokenizer")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def commands() -> list[Command]:
    found = []
    for page in PAGES:
        fenced = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith("```"):
                fenced = not fenced
            elif fenced and line.strip().startswith("pyconv "):
                found.append(Command(page, number, line.strip()))
    return found


class Inputs:
    """The models the docs' inputs are made from, each built once per session in its own folder."""

    def __init__(self, root: Path, smollm2: Path) -> None:
        self.root, self.smollm2 = root, smollm2
        self.workshop = Workshop(root / "workshop", root / "shared")

    def folder(self, name: str, build: Callable[[Path], None]) -> Path:
        """``root/name``, made by ``build`` the first time it is asked for."""
        folder = self.root / name
        if not folder.exists():
            staging = self.root / f"{name}.partial"
            staging.mkdir()
            build(staging)
            staging.rename(folder)
        return folder

    def converted(self, name: str, source: Path, output: str, **options: object) -> Path:
        def build(d: Path) -> None:
            pyconv.convert(source, d / output, progress=False, **options)
        return self.folder(name, build)


def hf_model(k: Inputs) -> Path:
    return k.folder("hf_model", lambda d: (d / "hf_model").symlink_to(k.smollm2))


def smollm2_gguf(k: Inputs) -> Path:
    return k.converted("model.gguf", k.smollm2, "model.gguf", outtype="q8_0")


def bitnet_model(k: Inputs) -> Path:
    def build(d: Path) -> None:
        import torch

        from .bitnet_fixtures import build_bitnet

        build_bitnet(d / "bitnet_model", k.smollm2, hidden_act="relu2", ternary=False, dtype=torch.float32, seed=2)
    return k.folder("bitnet_model", build)


def bitnet_f16(k: Inputs) -> Path:
    return k.converted("model-f16.gguf", bitnet_model(k) / "bitnet_model", "model-f16.gguf", outtype="f16")


def neobert_step(k: Inputs) -> Path:
    """outputs/run/checkpoints/1200 with a WordPiece tokenizer, as NeoBERT's trainer saves it."""
    def build(d: Path) -> None:
        from .archs_fixtures import train_wordpiece
        from .neobert_fixtures import Run, shape, write_step

        step = write_step(d, Run("run", shape(), seed=1), tokenizer=False)
        (step / "tokenizer").mkdir()
        train_wordpiece(step / "tokenizer", vocab_size=100)
    return k.folder("neobert-step", build)


def neobert_export(k: Inputs) -> Path:
    """The step folder and its HF export where the trainer's own exporter puts it."""
    def build(d: Path) -> None:
        shutil.copytree(neobert_step(k) / "outputs", d / "outputs")
        pyconv.convert(d / "outputs/run/checkpoints/1200", d / "outputs/run/hf/run_1200", to="hf", progress=False)
    return k.folder("neobert-export", build)


def neobert_gguf(k: Inputs) -> Path:
    return k.converted("neobert.gguf", neobert_step(k) / "outputs/run/checkpoints/1200", "neobert.gguf", outtype="q8_0")


def nanomoe_ckpt(k: Inputs) -> Path:
    def build(d: Path) -> None:
        from .test_export_nanomoe import save_ckpt
        from .test_remote_code_nanomoe import MIXED

        save_ckpt(d / "out-nanomoe" / "ckpt.pt", MIXED, seed=3)
    return k.folder("nanomoe", build)


def zero_run(k: Inputs) -> Path:
    """A LLaMA's DeepSpeed stage-2 checkpoint as HF's Trainer leaves one: latest, global_step1000/, and
    config.json with the tokenizer beside latest."""
    def build(d: Path) -> None:
        import torch
        from safetensors.torch import load_file

        llama = tiny_llama(k.workshop, size={"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                                              "num_key_value_heads": 4}, name="zero-llama")
        folder = d / "run" / "checkpoints"
        write_zero(folder, {n: t.to(torch.float32) for n, t in load_file(llama / "model.safetensors").items()},
                   tag="global_step1000")
        for name in ("config.json", "tokenizer.model"):
            shutil.copy(llama / name, folder / name)
    return k.folder("zero-run", build)


def dcp_run(k: Inputs) -> Path:
    """A LLaMA saved by torch.distributed.checkpoint under "model", in a step folder of a checkpoints/
    folder holding config.json and the tokenizer."""
    def build(d: Path) -> None:
        from safetensors.torch import load_file

        llama = tiny_llama(k.workshop, name="dcp-llama")
        folder = d / "checkpoints"
        folder.mkdir()
        write_dcp(folder / "step-1000", lambda _torch: load_file(llama / "model.safetensors"))
        for name in ("config.json", "tokenizer.model"):
            shutil.copy(llama / name, folder / name)
    return k.folder("dcp-run", build)


def ci_export(k: Inputs) -> Path:
    """What docs/ci.md's convert step leaves in $OUT_DIR."""
    def build(d: Path) -> None:
        (d / "export").mkdir()
        pyconv.convert(k.smollm2, d / "export" / "model.gguf", outtype="q8_0", compress="zstd", progress=False)
    return k.folder("export", build)


def fp8_model(k: Inputs) -> Path:
    """A tiny Llama with SmolLM2's tokenizer, its projections in FP8 with 32×32 block scales."""
    def build(d: Path) -> None:
        from .archs_fixtures import FAMILIES
        from .prequantized_fixtures import fp8_block, write_quantized

        base = k.root / "fp8-base"
        FAMILIES["llama"].build(base, k.smollm2)
        config = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [32, 32]}
        write_quantized(base, d / "fp8_model", config, fp8_block((32, 32)))
        shutil.rmtree(base)
    return k.folder("fp8-model", build)


def lora_pair(k: Inputs) -> Path:
    """A tiny Llama (base_model) and a PEFT LoRA adapter of it (lora_adapter), as PEFT saves one."""
    def build(d: Path) -> None:
        import warnings

        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        from .archs_fixtures import FAMILIES

        FAMILIES["llama"].build(d / "base_model", k.smollm2)
        model = AutoModelForCausalLM.from_pretrained(d / "base_model")
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5.23 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            adapted = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))
        adapted.save_pretrained(str(d / "lora_adapter"))
    return k.folder("lora", build)


# doc path (without a trailing "/") -> what makes it: a folder whose entries are put into the command's
# folder (linked, or copied when pyconv would write beside them), as the docs' commands expect them
INPUTS: dict[str, tuple[Callable[[Inputs], Path], bool]] = {
    "hf_model": (hf_model, False),
    "model.gguf": (smollm2_gguf, False),
    "model-f16.gguf": (bitnet_f16, False),
    "model-f32.gguf": (lambda k: k.converted("model-f32.gguf", k.smollm2, "model-f32.gguf", outtype="f32"), False),
    "bitnet_model": (bitnet_model, False),
    "hf_out": (lambda k: k.converted("hf_out", k.smollm2, "hf_out", to="hf"), False),
    "native_out": (lambda k: k.converted("native_out", k.smollm2, "native_out", to="native", layout="fused", tp_size=2), False),
    # the trainer's exporter writes beside the step folder: copied, so that each command has its own
    "outputs/run/checkpoints/1200": (neobert_step, True),
    "outputs/run/hf/run_1200": (neobert_export, True),
    "neobert.gguf": (neobert_gguf, False),
    "out-nanomoe/ckpt.pt": (nanomoe_ckpt, False),
    "run/checkpoints": (zero_run, False),
    "run/checkpoints/global_step1000": (zero_run, False),
    "checkpoints/step-1000": (dcp_run, False),
    "export/model.gguf": (ci_export, False),
    "export/model.gguf.zst": (ci_export, False),
    "fp8_model": (fp8_model, False),
    "base_model": (lora_pair, False),
    "lora_adapter": (lora_pair, False),
}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("doc-inputs"), smollm2_hf)


def expanded(word: str, command: Command) -> str:
    """A word with the docs' shell variables filled in and a usage placeholder replaced."""
    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in DOC_ENV:
            pytest.fail(f"{command.id}: ${name} is not one of the variables DOC_ENV in tests/test_docs.py gives a value")
        return DOC_ENV[name]
    return PLACEHOLDERS.get(word, re.sub(r"\$(?:(\w+)|\{(\w+)\})", variable, word))


def required_form(command: Command) -> list[str]:
    """The command's words with usage brackets dropped; each option a bracket names checked against --help."""
    optional = re.findall(r"\[([^\]]*)\]", command.text)
    words = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", command.text))
    if optional:
        usage = subprocess.run([sys.executable, "-m", "pyconv", words[1], "--help"], capture_output=True, text=True).stdout
        for option in re.findall(r"--[\w-]+", " ".join(optional)):
            assert option in usage, f"{command.id}: pyconv {words[1]} has no {option}"
    return words


def test_the_pages_have_commands() -> None:
    # the table below is exercised: a page set without pyconv commands would make every test vanish
    assert len(commands()) >= 20 and {c.page.name for c in commands()} >= {"README.md", "ci.md"}


@pytest.mark.slow
@pytest.mark.parametrize("command", commands(), ids=lambda c: c.id)
def test_doc_command_runs_as_printed(command: Command, inputs: Inputs, tmp_path: Path) -> None:
    words = [expanded(w, command) for w in required_form(command)]
    try:
        args = build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"{command.id}: pyconv does not take `{command.text}`")
    for dest in INPUT_ARGS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        key = str(value).rstrip("/")
        if key not in INPUTS:
            pytest.fail(f"{command.id}: the docs read {value!r}, which INPUTS in tests/test_docs.py does not make; add it there")
        make, copy = INPUTS[key]
        for entry in make(inputs).iterdir():
            target = tmp_path / entry.name
            if target.exists():
                continue
            if copy:
                shutil.copytree(entry, target, symlinks=True)
            else:
                target.symlink_to(entry)
    env = {**os.environ, **DOC_ENV}
    if args.command == "bench":  # the same jobs on the tiny shape, once each, on data shared by the session
        words = [*words, "--size", "tiny", "--rounds", "1"]
        env["PYCONV_BENCH_DATA"] = str(inputs.root / "bench-data")
        # the kquants job's llama-quantize and llama.cpp's sources, as `make llama-tools` leaves them
        tools = REPO / "build" / "llama-tools"
        env["PYCONV_LLAMA_QUANTIZE"] = str(tools / "cmake" / "bin" / "llama-quantize")
        sdist = inputs.root / "bench-data" / f"llama_cpp_python-{VERSION}.tar.gz"
        if not sdist.exists():
            sdist.parent.mkdir(parents=True, exist_ok=True)
            sdist.symlink_to(tools / sdist.name)
    r = subprocess.run([sys.executable, "-m", "pyconv", *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env=env)
    assert r.returncode == 0, f"{command.id}: `{command.text}` exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
