"""safetensors output: readable by the safetensors library and by transformers, sharded the HF way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import pyconv

TORCH_TYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
               torch.int8, torch.uint8, torch.bool]


@pytest.fixture
def every_dtype(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, dt in enumerate(TORCH_TYPES):
        shape = (3 + i, 5)
        if dt.is_floating_point:
            tensors[f"t.{i}"] = (torch.randn(shape, generator=g) * 100).to(dt)
        elif dt == torch.bool:
            tensors[f"t.{i}"] = torch.rand(shape, generator=g) > 0.5
        else:
            tensors[f"t.{i}"] = torch.randint(-100 if dt != torch.uint8 else 0, 100, shape, generator=g).to(dt)
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros((0, 4))
    path = tmp_path / "in.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "producer": "test"})
    return path, tensors


def test_no_outtype_keeps_every_tensor_bit_for_bit(tmp_path: Path, every_dtype: tuple[Path, dict[str, torch.Tensor]]) -> None:
    src, tensors = every_dtype
    pyconv.convert(src, tmp_path / "out.safetensors", progress=False)
    got = load_file(tmp_path / "out.safetensors")
    assert got.keys() == tensors.keys()
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    with safe_open(tmp_path / "out.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "producer": "test"}


@pytest.mark.parametrize("outtype,torch_type", [("f16", torch.float16), ("bf16", torch.bfloat16), ("f32", torch.float32)])
def test_outtype_casts_floats_only(tmp_path: Path, every_dtype: tuple[Path, dict[str, torch.Tensor]], outtype: str,
                                   torch_type: torch.dtype) -> None:
    src, tensors = every_dtype
    out = tmp_path / f"{outtype}.safetensors"
    pyconv.convert(src, out, outtype=outtype, progress=False)
    got = load_file(out)
    for name, t in tensors.items():
        want = t.to(torch_type) if t.dtype.is_floating_point else t
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name


def test_sharded_folder_follows_hf_conventions_and_loads_in_transformers(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sharded"
    pyconv.convert(tiny_llama_dir, out, to="safetensors", outtype="f32", max_shard_size=60_000, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and shards == sorted(set(index["weight_map"].values()))
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    sizes = {}
    for shard in shards:
        with safe_open(out / shard, "pt") as f:
            assert f.metadata() == {"format": "pt"}
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                assert index["weight_map"][k] == shard
                sizes[k] = f.get_slice(k).get_shape()
    assert index["metadata"]["total_size"] == sum(int(np.prod(s)) * 4 for s in sizes.values())
    for shard in shards:  # every shard but a lone oversized tensor respects the limit
        names = [k for k, v in index["weight_map"].items() if v == shard]
        if len(names) > 1:
            assert sum(int(np.prod(sizes[k])) * 4 for k in names) <= 60_000

    shutil.copy(tiny_llama_dir / "config.json", out / "config.json")
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = torch.tensor([[1, 5, 9, 33, 2, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_sharded_file_output_gets_sibling_shards_and_index(tmp_path: Path, tiny_llama_dir: Path) -> None:
    out = tmp_path / "weights.safetensors"
    pyconv.convert(tiny_llama_dir, out, max_shard_size=50_000, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "weights.safetensors.index.json" in names and not out.exists()
    assert any(n.startswith("weights-00001-of-") for n in names)
    index = json.loads((tmp_path / "weights.safetensors.index.json").read_text())
    merged = {}
    for shard in set(index["weight_map"].values()):
        merged.update(load_file(tmp_path / shard))
    assert merged.keys() == load_file(tiny_llama_dir / "model.safetensors").keys()
