"""Shared fixtures. Every fixture is generated here by the libraries that define the formats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# The suite's property tests draw the same examples on every run, so a red CI run is a real bug
# and reproducible; `make fuzz` (HYPOTHESIS_PROFILE=explore) draws new ones each time.
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

os.environ.setdefault("PYCONV_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pyconv`` command in a fresh process."""
    cmd = [sys.executable, "-m", "pyconv", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start_interruptible(cmd: list[str]) -> subprocess.Popen[str]:
    """Start ``cmd`` with Ctrl-C's default action, whatever this process inherited: a suite started
    in the background by a non-interactive shell ignores SIGINT, and its children would too."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509  (one signal call)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def save_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata if metadata is not None else {"format": "pt"})
    return path


def file_digests(folder: Path) -> dict[str, str]:
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LlamaForCausalLM saved by transformers itself (bf16 safetensors + config)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    return out


CACHE = Path(os.environ.get("PYCONV_TEST_CACHE", Path.home() / ".cache" / "pyconv-tests"))


def smollm2_gguf() -> Path:
    from pyconv.demo import smollm2_gguf as package_file

    return package_file()


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """The real SmolLM2-135M as a float32 HF folder made by transformers (built once, cached between runs)."""
    from pyconv.demo import smollm2_hf as build_or_check

    return build_or_check(CACHE / "smollm2-135m-instruct-hf-f32")
