"""PyTorch Distributed Checkpoints saved by torch.distributed.checkpoint itself from 2 gloo ranks
(tests/dcp_fixtures/make_checkpoints.py): FSDP2-sharded, replicated, column-sharded DTensors and a
plain single-process save. Each converts to what torch's own ``dcp_to_torch_save`` builds in memory,
element for element; the FSDP2 one goes on to a GGUF llama.cpp runs and an HF folder transformers
loads, both with the logits of the model before it was sharded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pyconv
from pyconv import ConversionError
from pyconv.options import ConvertOptions
from pyconv.sources import open_checkpoint
from pyconv.sources.dcp import DcpCheckpoint

from .archs_fixtures import train_sentencepiece
from .test_archs_gguf import llama_logits, max_diff
from .test_sources_zero import free_port

GENERATOR = Path(__file__).parent / "dcp_fixtures" / "make_checkpoints.py"
IDS = [1, 17, 42, 99, 250, 3, 64, 128, 7, 399]  # the generator's
# each checkpoint, the keys its model state is under, its world size
SAVES: dict[str, tuple[tuple[str, ...], int]] = {
    "fsdp2": (("model",), 2), "replicated": (("app", "model"), 2), "columns": (("model",), 2), "plain": ((), 1)}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def dcp_saves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every checkpoint of SAVES, written once per session by two gloo ranks."""
    out = tmp_path_factory.mktemp("dcp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           str(GENERATOR), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def dcp_to_torch_save(src: Path, tmp: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save as reference

    reference(src, tmp / "reference.pt")
    state: Any = torch.load(tmp / "reference.pt", weights_only=True)
    for key in keys:
        state = state[key]
    return state  # type: ignore[no-any-return]


@pytest.mark.parametrize("save", list(SAVES))
def test_equals_dcp_to_torch_save(dcp_saves: Path, save: str, tmp_path: Path) -> None:
    keys, world = SAVES[save]
    want = dcp_to_torch_save(dcp_saves / save, tmp_path, keys)
    out = tmp_path / "out.safetensors"
    result = pyconv.convert(dcp_saves / save, out, progress=False)
    got = load_file(out)
    assert list(got) == list(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    ck = result.checkpoint
    assert isinstance(ck, DcpCheckpoint) and ck.dcp_key == ".".join(keys) and ck.world_size == world
    assert ck.config is not None and ck.config["model_type"] == "llama"  # config.json one level up


def test_fsdp2_to_gguf_runs_in_llama_cpp(dcp_saves: Path, tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.mkdir()
    train_sentencepiece(tok, gemma=False, vocab_size=400)
    out = tmp_path / "model.gguf"
    r = subprocess.run([sys.executable, "-m", "pyconv", "convert", str(dcp_saves / "fsdp2"), "-o", str(out), "--to", "gguf",
                        "--outtype", "f32", "--tokenizer", str(tok / "tokenizer.model"), "-q"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    want = dcp_to_torch_save(dcp_saves / "fsdp2", tmp_path, ("model",))
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for gguf_name, name in (("token_embd.weight", "model.embed_tokens.weight"), ("output.weight", "lm_head.weight"),
                            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
                            ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight")):
        assert np.array_equal(np.asarray(tensors[gguf_name].data), want[name].numpy()), gguf_name
    logits = torch.load(dcp_saves / "logits.pt").numpy()
    got = llama_logits(out, IDS)
    assert max_diff(got, logits) < 1e-4
    assert np.array_equal(got.argmax(-1), logits.argmax(-1))


def test_fsdp2_to_hf_folder_gives_the_logits_before_sharding(dcp_saves: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    pyconv.convert(dcp_saves / "fsdp2", out, to="hf", progress=False)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([IDS])).logits[0]
    # the same weights (see above); only the thread count of the matmuls differs from the run that saved them
    torch.testing.assert_close(got, torch.load(dcp_saves / "logits.pt"), atol=1e-5, rtol=0)


def test_dcp_key_chooses_the_state_and_names_what_is_there(dcp_saves: Path) -> None:
    ck = open_checkpoint(dcp_saves / "replicated", ConvertOptions.of(dcp_key="app.model"))
    assert isinstance(ck, DcpCheckpoint) and ck.dcp_key == "app.model" and "lm_head.weight" in ck.tensors
    assert ck.ignored > 0  # the optimizer's entries
    with pytest.raises(ConversionError, match=r"no tensors under 'model' \(saved keys: 'app'\); name the model's key with --dcp-key"):
        open_checkpoint(dcp_saves / "replicated", ConvertOptions.of(dcp_key="model"))
