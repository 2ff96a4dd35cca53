"""A DeepSpeed ZeRO-3 checkpoint goes straight to a GGUF llama.cpp runs: no fp32 file in between,
and llama.cpp's logits equal transformers' on the master weights DeepSpeed recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pyconv

from .archs_fixtures import train_sentencepiece
from .test_archs_gguf import llama_logits, max_diff
from .test_sources_zero import references, zero_runs  # noqa: F401  (session fixtures: DeepSpeed trains once)

pytestmark = pytest.mark.slow


def test_zero3_llama_to_gguf_runs_in_llama_cpp(references: dict, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    ref = references["llama_s3_bf16_ws2"]
    cfg = json.loads((ref.ckpt / "config.json").read_text())
    tok = tmp_path / "tok"
    tok.mkdir()
    assert train_sentencepiece(tok, gemma=False, vocab_size=400) <= cfg["vocab_size"]
    out = tmp_path / "zero.gguf"
    result = pyconv.convert(ref.ckpt, out, outtype="f32", tokenizer=str(tok / "tokenizer.model"), progress=False)
    assert result.checkpoint.format_name == "zero" and not any(p.suffix == ".safetensors" for p in tmp_path.iterdir())

    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")}))
    model.load_state_dict({k: v.float() for k, v in ref.expected("master").items()})
    ids = [1, 17, 42, 99, 250, 3, 64, 128, 7, 399]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    got = llama_logits(out, ids)
    assert max_diff(got, want) < 1e-4
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    shutil.rmtree(tok)
