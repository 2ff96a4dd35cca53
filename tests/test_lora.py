"""PEFT LoRA adapters: an adapter made by PEFT on a tiny llama becomes llama.cpp's adapter GGUF, whose
logits over the base GGUF are PEFT's; whatever pyconv does not read is refused in one line."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import pyconv
from pyconv.validate.runtime import llama_logits

from .archs_fixtures import FAMILIES
from .conftest import run_cli

PROMPT_IDS = [1, 504, 3458, 282, 4649, 314, 7042, 30]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def logits_of(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = model(torch.tensor([PROMPT_IDS])).logits[0].float().numpy()
    return out


@dataclass(frozen=True)
class Lora:
    base: Path
    adapter: Path
    adapter_bin: Path
    base_logits: np.ndarray
    peft_logits: np.ndarray


@pytest.fixture(scope="session")
def lora(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Lora:
    """A tiny f32 llama, a PEFT adapter of it (random A and B, so the update is far from zero) saved as
    safetensors and as .bin, and the logits of the base and of PEFT's adapted model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    base = root / "base"
    FAMILIES["llama"].build(base, smollm2_hf)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    base_logits = logits_of(model)
    torch.manual_seed(5)
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5.23 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False))
    peft_model.eval()
    peft_model.save_pretrained(str(root / "adapter"))
    peft_model.save_pretrained(str(root / "adapter-bin"), safe_serialization=False)
    return Lora(base, root / "adapter", root / "adapter-bin", base_logits, logits_of(peft_model))


@pytest.fixture(scope="session")
def base_gguf(lora: Lora, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora-gguf") / "base.gguf"
    pyconv.convert(lora.base, out, outtype="f32")
    return out


def adapted_logits(base: Path, adapter: Path) -> np.ndarray:
    from llama_cpp import GGML_TYPE_F32, Llama

    # an f32 KV cache, so that only the weights' arithmetic differs from PEFT's
    model = Llama(str(base), lora_path=str(adapter), n_ctx=64, n_threads=2, verbose=False, seed=1, logits_all=True,
                  type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    try:
        return llama_logits(model, PROMPT_IDS)
    finally:
        model.close()


def test_llama_cpp_with_the_adapter_gives_peft_logits(lora: Lora, base_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter.gguf"
    pyconv.convert(lora.adapter, out)  # the base's config from base_model_name_or_path, a local folder
    reader = gguf.GGUFReader(out)
    kv = {f.name: f.contents() for f in reader.fields.values()}
    assert (kv["general.type"], kv["adapter.type"], kv["adapter.lora.alpha"]) == ("adapter", "lora", 16.0)
    assert kv["general.architecture"] == "llama"
    names = {t.name for t in reader.tensors}
    assert len(names) == 2 * 2 * len(TARGETS) and {"blk.1.attn_q.weight.lora_a", "blk.1.ffn_down.weight.lora_b"} <= names

    want, before = lora.peft_logits, lora.base_logits
    assert np.abs(want - before).max() > 0.5  # the adapter changes the model well beyond the tolerance
    got = adapted_logits(base_gguf, out)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)

    # Q8_0 where rows fit its blocks (A), f16 where they do not (B's rows of r values): still PEFT's model
    pyconv.convert(lora.adapter, tmp_path / "adapter-q8.gguf", outtype="q8_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(tmp_path / "adapter-q8.gguf").tensors}
    assert types["blk.0.attn_q.weight.lora_a"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_q.weight.lora_b"] == gguf.GGMLQuantizationType.F16
    change = adapted_logits(base_gguf, tmp_path / "adapter-q8.gguf") - before  # llama.cpp's Q8_0 also rounds activations
    assert np.corrcoef(change.ravel(), (want - before).ravel())[0, 1] > 0.99


def test_adapter_bin_gives_the_same_tensors(lora: Lora, tmp_path: Path) -> None:
    pyconv.convert(lora.adapter, tmp_path / "st.gguf")
    pyconv.convert(lora.adapter_bin, tmp_path / "bin.gguf")
    st, pt = gguf.GGUFReader(tmp_path / "st.gguf"), gguf.GGUFReader(tmp_path / "bin.gguf")
    from_bin = {t.name: bytes(t.data) for t in pt.tensors}
    assert {t.name: bytes(t.data) for t in st.tensors} == from_bin and len(from_bin) == 4 * len(TARGETS)


def test_without_the_qk_permutation_llama_cpp_disagrees(lora: Lora, base_gguf: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ablation: B of Q and K left in HF's row order gives other logits, so the first test sees the permutation."""
    from pyconv.targets import gguf_lora

    monkeypatch.setattr(gguf_lora, "rope_permuted", lambda view, _heads: (view, view.shape))
    out = tmp_path / "unpermuted.gguf"
    pyconv.convert(lora.adapter, out)
    got = adapted_logits(base_gguf, out)
    assert np.abs(got - lora.peft_logits).max() > 0.05


@pytest.fixture
def adapter_copy(lora: Lora, tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "adapter"
    shutil.copytree(lora.adapter, folder)
    yield folder


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("changes", "says"), [
    ({"base_model_name_or_path": "someone/llama-hub-id"}, "pass --base BASE_DIR"),
    ({"use_dora": True}, "DoRA"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"peft_type": "IA3"}, "peft_type is 'IA3'"),
    ({"r": 4}, "not of rank r = 4"),
])
def test_what_is_not_plain_lora_is_refused_in_one_line(adapter_copy: Path, tmp_path: Path, changes: dict[str, object],
                                                        says: str) -> None:
    edit_config(adapter_copy, **changes)
    r = run_cli("convert", adapter_copy, "-o", tmp_path / "out.gguf")
    assert r.returncode != 0 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.gguf").exists()


def test_base_flag_and_stray_tensors(lora: Lora, adapter_copy: Path, tmp_path: Path) -> None:
    edit_config(adapter_copy, base_model_name_or_path=None)
    r = run_cli("convert", adapter_copy, "-o", tmp_path / "a.gguf")
    assert r.returncode != 0 and "names no base model" in r.stderr
    assert run_cli("convert", adapter_copy, "-o", tmp_path / "a.gguf", "--base", lora.base).returncode == 0

    from safetensors.torch import load_file, save_file

    weights = adapter_copy / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(64)
    save_file(tensors, str(weights))
    r = run_cli("convert", adapter_copy, "-o", tmp_path / "b.gguf", "--base", lora.base)
    assert r.returncode != 0 and "lora_magnitude_vector" in r.stderr and "not a lora_A/lora_B" in r.stderr
    r = run_cli("convert", lora.adapter, "-o", tmp_path / "hf", "--to", "hf")
    assert r.returncode != 0 and "is a LoRA adapter" in r.stderr


@pytest.fixture(scope="session")
def peft_merged(lora: Lora) -> Path:
    """PEFT's own merge of the adapter into the base, saved by transformers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lora.base, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        merged = PeftModel.from_pretrained(model, str(lora.adapter)).merge_and_unload()
    out = lora.base.parent / "peft-merged"
    merged.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(lora.base / name, out / name)
    return out


def assert_close_per_tensor(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, w in want.items():
        assert np.abs(got[name] - w).max() <= 1e-6 * np.abs(w).max(), name


def test_merged_in_the_engine_equals_peft_merge_and_unload(lora: Lora, peft_merged: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    pyconv.convert(peft_merged, tmp_path / "peft.safetensors", outtype="f32")
    pyconv.convert(lora.base, tmp_path / "ours.safetensors", outtype="f32", merge_lora=(str(lora.adapter),))
    want = load_file(str(tmp_path / "peft.safetensors"))
    assert_close_per_tensor(load_file(str(tmp_path / "ours.safetensors")), want)
    base = load_file(str(lora.base / "model.safetensors"))
    assert not np.allclose(base["model.layers.0.self_attn.q_proj.weight"], want["model.layers.0.self_attn.q_proj.weight"])

    # GGUF: the update lands before the Q/K permutation, in the same pass as the cast
    pyconv.convert(peft_merged, tmp_path / "peft.gguf", outtype="f32")
    r = run_cli("convert", lora.base, "-o", tmp_path / "ours.gguf", "--outtype", "f32", "--merge-lora", lora.adapter)
    assert r.returncode == 0, r.stderr
    ours = {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_path / "ours.gguf").tensors}
    assert_close_per_tensor(ours, {t.name: np.array(t.data) for t in gguf.GGUFReader(tmp_path / "peft.gguf").tensors})


def test_merge_scale_and_quantized_output(lora: Lora, tmp_path: Path) -> None:
    """``DIR:SCALE`` adds SCALE · alpha/r · B @ A (numpy's product here), and a quantized output quantizes
    the merged weight: Q8_0 bytes equal gguf-py's quantizer of it."""
    from safetensors.numpy import load_file

    pyconv.convert(lora.base, tmp_path / "half.safetensors", outtype="f32", merge_lora=(f"{lora.adapter}:0.5",))
    base = load_file(str(lora.base / "model.safetensors"))
    pairs = load_file(str(lora.adapter / "adapter_model.safetensors"))
    name = "model.layers.1.mlp.down_proj"
    a, b = pairs[f"base_model.model.{name}.lora_A.weight"], pairs[f"base_model.model.{name}.lora_B.weight"]
    want = base[f"{name}.weight"] + np.float32(0.5 * 16 / 8) * (b @ a)
    got = load_file(str(tmp_path / "half.safetensors"))[f"{name}.weight"]
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()

    # repeated, the adapters add up: twice a quarter is the half
    pyconv.convert(lora.base, tmp_path / "quarters.safetensors", outtype="f32",
                   merge_lora=(f"{lora.adapter}:0.25", f"{lora.adapter}:0.25"))
    twice = load_file(str(tmp_path / "quarters.safetensors"))[f"{name}.weight"]
    assert np.abs(twice - want).max() <= 1e-6 * np.abs(want).max()

    pyconv.convert(lora.base, tmp_path / "q8.gguf", outtype="q8_0", merge_lora=(f"{lora.adapter}:0.5",))
    down = next(t for t in gguf.GGUFReader(tmp_path / "q8.gguf").tensors if t.name == "blk.1.ffn_down.weight")
    assert bytes(down.data) == gguf.quants.quantize(got, gguf.GGMLQuantizationType.Q8_0).tobytes()


def test_merge_refuses_what_does_not_match(lora: Lora, adapter_copy: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = adapter_copy / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors["base_model.model.model.layers.0.self_attn.nope_proj.lora_A.weight"] = torch.ones(8, 64)
    tensors["base_model.model.model.layers.0.self_attn.nope_proj.lora_B.weight"] = torch.ones(64, 8)
    save_file(tensors, str(weights))
    r = run_cli("convert", lora.base, "-o", tmp_path / "m.safetensors", "--merge-lora", adapter_copy)
    assert r.returncode != 0 and "nope_proj.weight', which" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    edit_config(adapter_copy, use_dora=True)
    r = run_cli("convert", lora.base, "-o", tmp_path / "m.safetensors", "--merge-lora", f"{adapter_copy}:2")
    assert r.returncode != 0 and "DoRA" in r.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_merged_hf_folder_computes_peft_logits(lora: Lora, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    pyconv.convert(lora.base, tmp_path / "hf", to="hf", merge_lora=(str(lora.adapter),))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    np.testing.assert_allclose(logits_of(model), lora.peft_logits, atol=1e-4, rtol=0)
