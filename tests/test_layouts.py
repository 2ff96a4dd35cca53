"""Trainer layouts: HF → fused → HF gives back every byte, the fused tensors are what trainers hold
(checked with torch slicing, not pyconv), and tensor-parallel rank files follow Megatron's column and row
rules, merge back exactly and re-split for another rank count."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import pyconv

SMALL = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 64}
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),
}


def gpt2_fields() -> dict[str, Any]:
    return {"vocab_size": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's tiny random model saved by transformers (vectors perturbed so none is all ones)."""
    import transformers

    root = tmp_path_factory.mktemp("layouts")
    folders = {}
    for seed, (name, (config_cls, model_cls, extra)) in enumerate(FAMILIES.items()):
        fields = gpt2_fields() if name == "gpt2" else {**SMALL, **extra}
        torch.manual_seed(seed)
        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**fields))
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.2)
        model.save_pretrained(root / name)
        folders[name] = root / name
    folders["qwen"] = qwen_v1(root / "qwen")
    return folders


def qwen_v1(folder: Path) -> Path:
    """A Qwen (v1) checkpoint as its remote code names it: c_attn Linear [3E, E] with bias, w1/w2/c_proj MLP."""
    folder.mkdir()
    g = torch.Generator().manual_seed(7)
    e, f, v = 64, 96, 128
    tensors = {"transformer.wte.weight": torch.randn(v, e, generator=g), "transformer.ln_f.weight": torch.randn(e, generator=g),
               "lm_head.weight": torch.randn(v, e, generator=g)}
    for i in range(2):
        h = f"transformer.h.{i}"
        tensors |= {f"{h}.ln_1.weight": torch.randn(e, generator=g), f"{h}.ln_2.weight": torch.randn(e, generator=g),
                    f"{h}.attn.c_attn.weight": torch.randn(3 * e, e, generator=g), f"{h}.attn.c_attn.bias": torch.randn(3 * e, generator=g),
                    f"{h}.attn.c_proj.weight": torch.randn(e, e, generator=g), f"{h}.mlp.w1.weight": torch.randn(f, e, generator=g),
                    f"{h}.mlp.w2.weight": torch.randn(f, e, generator=g), f"{h}.mlp.c_proj.weight": torch.randn(e, f, generator=g)}
    save_file({k: t.to(torch.bfloat16) for k, t in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    config = {"architectures": ["QWenLMHeadModel"], "model_type": "qwen", "hidden_size": e, "num_attention_heads": 4,
              "num_hidden_layers": 2, "vocab_size": v, "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def rank_tensors(folder: Path, tp: int, step: int = 0) -> list[dict[str, torch.Tensor]]:
    step_dir = folder / f"step_{step}"
    names = ["model.safetensors"] if tp == 1 else [f"model-tp{r:02d}-of-{tp:02d}.safetensors" for r in range(tp)]
    return [load_file(step_dir / n) for n in names]


def assert_same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(x) == sorted(y)
    for name in x:
        assert x[name].dtype == y[name].dtype and torch.equal(x[name], y[name]), name


@pytest.mark.parametrize("family", [*FAMILIES, "qwen"])
def test_hf_to_fused_to_hf_is_bit_exact(hf: dict[str, Path], tmp_path: Path, family: str) -> None:
    native, back = tmp_path / "native", tmp_path / "back"
    pyconv.convert(hf[family], native, to="native", layout="fused", progress=False)
    assert (native / "latest_step.txt").read_text() == "0\n"
    pyconv.convert(native, back, to="hf", progress=False)
    assert_same_tensors(hf[family], back)


def test_fused_tensors_are_the_trainers(hf: dict[str, Path], tmp_path: Path) -> None:
    for family in ("llama", "qwen2", "phi3", "gpt2", "qwen"):
        pyconv.convert(hf[family], tmp_path / family, to="native", progress=False)
    llama, fused = load_file(hf["llama"] / "model.safetensors"), rank_tensors(tmp_path / "llama", 1)[0]
    a, m = "model.layers.1.self_attn.", "model.layers.1.mlp."
    assert torch.equal(fused[a + "kv_proj.weight"], torch.cat([llama[a + "k_proj.weight"], llama[a + "v_proj.weight"]]))
    assert torch.equal(fused[m + "gate_up_proj.weight"], torch.cat([llama[m + "gate_proj.weight"], llama[m + "up_proj.weight"]]))
    assert a + "k_proj.weight" not in fused and torch.equal(fused[a + "q_proj.weight"], llama[a + "q_proj.weight"])
    qwen2, fused = load_file(hf["qwen2"] / "model.safetensors"), rank_tensors(tmp_path / "qwen2", 1)[0]
    assert torch.equal(fused[a + "kv_proj.bias"], torch.cat([qwen2[a + "k_proj.bias"], qwen2[a + "v_proj.bias"]]))
    phi3, fused = load_file(hf["phi3"] / "model.safetensors"), rank_tensors(tmp_path / "phi3", 1)[0]
    q, kv = phi3[a + "qkv_proj.weight"].split([64, 64])  # 4 heads of 16 rows, then K and V of 2 heads each
    assert torch.equal(fused[a + "q_proj.weight"], q) and torch.equal(fused[a + "kv_proj.weight"], kv)
    gpt2, fused = load_file(hf["gpt2"] / "model.safetensors"), rank_tensors(tmp_path / "gpt2", 1)[0]
    h = "transformer.h.0."
    qkv = gpt2[h + "attn.c_attn.weight"].T  # Conv1D [in, out] → Linear [out, in]
    assert torch.equal(fused[h + "attn.q_proj.weight"], qkv[:64]) and torch.equal(fused[h + "attn.kv_proj.weight"], qkv[64:])
    assert torch.equal(fused[h + "attn.kv_proj.bias"], gpt2[h + "attn.c_attn.bias"][64:])
    for hf_name, fused_name in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.up_proj"), ("mlp.c_proj", "mlp.down_proj")):
        assert torch.equal(fused[f"{h}{fused_name}.weight"], gpt2[f"{h}{hf_name}.weight"].T)
        assert torch.equal(fused[f"{h}{fused_name}.bias"], gpt2[f"{h}{hf_name}.bias"])
    qwen, fused = load_file(hf["qwen"] / "model.safetensors"), rank_tensors(tmp_path / "qwen", 1)[0]
    assert torch.equal(fused[h + "mlp.gate_up_proj.weight"], torch.cat([qwen[h + "mlp.w2.weight"], qwen[h + "mlp.w1.weight"]]))
    assert torch.equal(fused[h + "attn.q_proj.bias"], qwen[h + "attn.c_attn.bias"][:64])


def test_tensor_parallel_ranks_follow_column_and_row_rules(hf: dict[str, Path], tmp_path: Path) -> None:
    pyconv.convert(hf["llama"], tmp_path / "tp2", to="native", tp_size=2, step=300, progress=False)
    assert (tmp_path / "tp2" / "latest_step.txt").read_text() == "300\n"
    full = load_file(hf["llama"] / "model.safetensors")
    ranks = rank_tensors(tmp_path / "tp2", 2, step=300)
    a, m = "model.layers.0.self_attn.", "model.layers.0.mlp."
    for r, rank in enumerate(ranks):
        k, v = full[a + "k_proj.weight"].chunk(2)[r], full[a + "v_proj.weight"].chunk(2)[r]
        assert torch.equal(rank[a + "kv_proj.weight"], torch.cat([k, v]))                      # column, per part
        gate, up = full[m + "gate_proj.weight"].chunk(2)[r], full[m + "up_proj.weight"].chunk(2)[r]
        assert torch.equal(rank[m + "gate_up_proj.weight"], torch.cat([gate, up]))
        assert torch.equal(rank[a + "q_proj.weight"], full[a + "q_proj.weight"].chunk(2)[r])  # column
        assert torch.equal(rank[a + "o_proj.weight"], full[a + "o_proj.weight"].chunk(2, dim=1)[r])  # row
        assert torch.equal(rank[m + "down_proj.weight"], full[m + "down_proj.weight"].chunk(2, dim=1)[r])
        assert torch.equal(rank["model.embed_tokens.weight"], full["model.embed_tokens.weight"].chunk(2)[r])  # vocab
        assert torch.equal(rank["model.norm.weight"], full["model.norm.weight"])               # replicated


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "gpt2", "mixtral"])
def test_tensor_parallel_merge_and_resplit_round_trip(hf: dict[str, Path], tmp_path: Path, family: str) -> None:
    pyconv.convert(hf[family], tmp_path / "tp2", to="native", tp_size=2, progress=False)
    pyconv.convert(tmp_path / "tp2", tmp_path / "back", to="hf", progress=False)
    assert_same_tensors(hf[family], tmp_path / "back")
    pyconv.convert(tmp_path / "tp2" / "step_0", tmp_path / "tp1", to="native", tp_size=1, progress=False)
    assert sorted(rank_tensors(tmp_path / "tp1", 1)[0]) == sorted(rank_tensors(tmp_path / "tp2", 2)[0])
    pyconv.convert(tmp_path / "tp1", tmp_path / "back1", to="hf", progress=False)
    assert_same_tensors(hf[family], tmp_path / "back1")


def test_native_output_loads_back_in_transformers(hf: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    pyconv.convert(hf["gpt2"], tmp_path / "native", to="native", tp_size=2, progress=False)
    pyconv.convert(tmp_path / "native", tmp_path / "back", to="hf", progress=False)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    ours, info = AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    ref = AutoModelForCausalLM.from_pretrained(hf["gpt2"], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, ref(ids).logits)


def test_hf_layout_keeps_hf_names(hf: dict[str, Path], tmp_path: Path) -> None:
    pyconv.convert(hf["phi3"], tmp_path / "native", to="native", layout="hf", progress=False)
    assert sorted(rank_tensors(tmp_path / "native", 1)[0]) == sorted(load_file(hf["phi3"] / "model.safetensors"))
    config = json.loads((tmp_path / "native" / "step_0" / "config.json").read_text())
    assert config["pyconv_native"] == {"format": 1, "arch": "phi3", "layout": "hf", "tp_size": 1, "step": 0}


def test_state_dict_without_config_is_recognised_by_its_names(hf: dict[str, Path], tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "bare"
    src.mkdir()
    torch.save(load_file(hf["gpt2"] / "model.safetensors"), src / "ckpt.pt")
    with caplog.at_level(logging.WARNING, logger="pyconv"):
        pyconv.convert(src / "ckpt.pt", tmp_path / "native", to="native", progress=False)
    assert "there is no config.json; the tensor names look like 'gpt2', assumed" in caplog.text
    assert "transformer.h.1.attn.kv_proj.weight" in rank_tensors(tmp_path / "native", 1)[0]


@pytest.mark.parametrize(("options", "message"), [
    ({"tp_size": 3}, "does not split into"),
    ({"tp_size": 2, "layout": "hf"}, "pass --layout fused"),
    ({"layout": "sideways"}, "--layout sideways is not one of fused, hf"),
])
def test_impossible_layouts_are_refused(hf: dict[str, Path], tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(pyconv.ConversionError, match=message):
        pyconv.convert(hf["llama"], tmp_path / "out", to="native", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_broken_step_pointer_is_named(hf: dict[str, Path], tmp_path: Path) -> None:
    pyconv.convert(hf["llama"], tmp_path / "native", to="native", step=5, progress=False)
    shutil.rmtree(tmp_path / "native" / "step_5")
    with pytest.raises(pyconv.ConversionError, match="points to step 5 but there is no step_5/"):
        pyconv.convert(tmp_path / "native", tmp_path / "back", to="hf", progress=False)
