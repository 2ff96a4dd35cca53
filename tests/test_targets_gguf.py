"""GGUF output for the real SmolLM2-135M, proven by gguf-py, transformers' GGUF loader and llama.cpp."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import pyconv

from .conftest import run_cli

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was"]
TOKENIZER_SAMPLES = [
    "Hello world! Ünïcödé — 日本語のテキスト, emoji 🦙🚀, Ελληνικά, русский.",
    "def f(x):\n    return x ** 2  # comment\n\tindented\r\n",
    "Numbers: 3 33 333 3333 3.14159 1e-5 -42 0x1F 1,000,000",
    "   leading   and  trailing   whitespace runs   \n\n\n  ",
    "<|im_start|>user\nHi<|im_end|>",
]


@pytest.fixture(scope="module")
def smol_gguf(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("smol-gguf")
    files = {}
    for outtype in ("f32", "f16", "q8_0"):
        files[outtype] = out / f"smol-{outtype}.gguf"
        pyconv.convert(smollm2_hf, files[outtype], outtype=outtype, progress=False)
    return files


def llama(path: Path):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=256, n_threads=2, verbose=True, seed=1)


def hf_greedy(folder: Path, prompts: list[str], n: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=n, do_sample=False)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def llama_greedy(path: Path, prompts: list[str], n: int) -> list[list[int]]:
    model = llama(path)
    out = []
    for p in prompts:
        ids = model.tokenize(p.encode(), add_bos=True, special=True)
        tokens = []
        for tok in model.generate(ids, temp=0.0, top_k=1, reset=True):
            tokens.append(tok)
            if len(tokens) == n:
                break
        out.append(tokens)
    return out


def test_gguf_py_reads_every_tensor_with_llama_cpp_names_and_types(smol_gguf: dict[str, Path], smollm2_hf: Path) -> None:
    from safetensors import safe_open

    for outtype, path in smol_gguf.items():
        r = gguf.GGUFReader(path)
        assert len(r.tensors) == 272
        assert r.fields["general.architecture"].contents() == "llama"
        assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"
        assert r.fields["llama.block_count"].contents() == 30
        types = {t.name: t.tensor_type.name for t in r.tensors}
        assert all(types[n] == "F32" for n in types if n.endswith("norm.weight"))
        assert {types[n] for n in types if not n.endswith("norm.weight")} == {outtype.upper()}
        assert types["token_embd.weight"] == outtype.upper() and "output.weight" not in types  # tied
    # values: f32 norms byte-identical to the source; q8_0 equal to gguf-py quantizing the permuted source
    r = gguf.GGUFReader(smol_gguf["q8_0"])
    by_name = {t.name: t for t in r.tensors}
    with safe_open(smollm2_hf / "model.safetensors", "np") as f:
        norm = f.get_tensor("model.layers.3.input_layernorm.weight")
        assert np.array_equal(np.asarray(by_name["blk.3.attn_norm.weight"].data), norm)
        q = f.get_tensor("model.layers.3.self_attn.q_proj.weight")
        permuted = q.reshape(9, 2, 32, 576).swapaxes(1, 2).reshape(q.shape)
        want = gguf.quants.quantize(permuted, gguf.GGMLQuantizationType.Q8_0)
        assert np.asarray(by_name["blk.3.attn_q.weight"].data).tobytes() == want.tobytes()


def test_llama_cpp_greedy_tokens_equal_transformers(smol_gguf: dict[str, Path], smollm2_hf: Path) -> None:
    want = hf_greedy(smollm2_hf, PROMPTS, 12)
    assert llama_greedy(smol_gguf["f16"], PROMPTS, 12) == want
    # the spec's reference continuation, as ids
    assert want[0] == [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33]
    assert llama_greedy(smol_gguf["q8_0"], PROMPTS[:1], 12) == want[:1]


def test_transformers_gguf_loader_gets_the_same_logits(smol_gguf: dict[str, Path], smollm2_hf: Path) -> None:
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314, 7042, 30]])
    ref = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32)
    with torch.no_grad():
        want = ref(ids).logits
        for outtype, tol in (("f32", 1e-4), ("f16", 0.15)):
            path = smol_gguf[outtype]
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            got = model(ids).logits
            assert (got - want).abs().max().item() < tol, outtype
            assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_llama_cpp_tokenizes_like_tokenizers(smol_gguf: dict[str, Path], smollm2_hf: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(smollm2_hf / "tokenizer.json"))
    model = llama(smol_gguf["f16"])
    for text in TOKENIZER_SAMPLES:
        assert model.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text, add_special_tokens=False).ids, text


def test_fingerprint_and_meta_sidecars(smol_gguf: dict[str, Path], smollm2_hf: Path, tmp_path: Path) -> None:
    path = smol_gguf["f16"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (path.parent / "smol-f16.gguf.sha256").read_text() == f"sha256-{digest}\n"
    meta = json.loads((path.parent / "smol-f16.meta.json").read_text())
    assert meta["pyconv_version"] == pyconv.__version__ and meta["options"]["outtype"] == "f16"
    assert meta["inputs_hashed"] is False and meta["sources"][0]["sha256"] is None  # not unless asked
    assert meta["outputs"] == [{"file": "smol-f16.gguf", "bytes": path.stat().st_size, "sha256": digest}]
    assert meta["tensor_types"] == {"f16": 211, "f32": 61}
    # same input and options, another thread count: same bytes, same fingerprint
    again = tmp_path / "smol-f16.gguf"
    pyconv.convert(smollm2_hf, again, outtype="f16", threads=1, chunk_bytes=1 << 16, progress=False, hash_inputs=True)
    assert (tmp_path / "smol-f16.gguf.sha256").read_text() == f"sha256-{digest}\n"
    meta = json.loads((tmp_path / "smol-f16.meta.json").read_text())
    assert meta["inputs_hashed"] is True
    assert meta["sources"][0]["sha256"] == hashlib.sha256((smollm2_hf / "model.safetensors").read_bytes()).hexdigest()


def test_split_output_is_what_llama_cpp_loads(smollm2_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "smol.gguf"
    r = run_cli("convert", smollm2_hf, "-o", out, "--outtype", "f16", "--split-max-size", "100M")
    assert r.returncode == 0, r.stderr
    shards = sorted(tmp_path.glob("smol-*-of-*.gguf"))
    assert [p.name for p in shards] == [f"smol-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    total = 0
    for i, shard in enumerate(shards):
        rd = gguf.GGUFReader(shard)
        assert rd.fields["split.no"].contents() == i and rd.fields["split.count"].contents() == 3
        assert rd.fields["split.tensors.count"].contents() == 272
        assert ("general.architecture" in rd.fields) == (i == 0)
        total += len(rd.tensors)
        assert (tmp_path / f"{shard.name}.sha256").exists()
    assert total == 272
    assert llama_greedy(shards[0], PROMPTS[:1], 8) == [[7042, 30, 198, 198, 504, 2988, 314, 42]]


def test_unknown_architecture_names_the_way_to_the_supported_ones(tmp_path: Path, smollm2_hf: Path) -> None:
    import shutil

    src = tmp_path / "m"
    shutil.copytree(smollm2_hf, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["FancyNewForCausalLM"], "fancy"
    (src / "config.json").write_text(json.dumps(cfg))
    r = run_cli("convert", src, "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and not (tmp_path / "x.gguf").exists()
    assert "architecture ['FancyNewForCausalLM'] (model_type 'fancy') is not supported; the closest pyconv has is" in r.stderr
    assert "`pyconv archs` lists all" in r.stderr and "'pyconv.families' entry point" in r.stderr
