"""Pre-quantized checkpoints in: FP8 with block scales, compressed-tensors FP8 and int8, dequantized by
the engine into every target and checked against each format's formula, transformers' own
dequantization and llama.cpp; anything else about quantization refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

import pyconv
from pyconv.validate.runtime import hf_logits, llama_logits, load_llama

from .archs_fixtures import FAMILIES
from .conftest import run_cli
from .prequantized_fixtures import (
    compressed,
    compressed_config,
    fp8_block,
    write_quantized,
)

FP8_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [32, 32]}
PROMPT_IDS = [1, 504, 3458, 282, 4649, 314, 7042, 30]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Path:
    """A tiny f32 llama with SmolLM2's tokenizer, as transformers saves it."""
    out = tmp_path_factory.mktemp("prequant") / "base"
    FAMILIES["llama"].build(out, smollm2_hf)
    return out


@pytest.fixture(scope="session")
def fp8_model(tiny_base: Path) -> tuple[Path, dict[str, np.ndarray]]:
    out = tiny_base.parent / "fp8"
    return out, write_quantized(tiny_base, out, FP8_CONFIG, fp8_block((32, 32)))


def test_fp8_blocks_decode_to_the_formula_in_every_float_type(fp8_model: tuple[Path, dict[str, np.ndarray]],
                                                              tmp_path: Path) -> None:
    src, expect = fp8_model
    pyconv.convert(src, tmp_path / "f32.safetensors")
    got = load_file(str(tmp_path / "f32.safetensors"))
    assert not [n for n in got if "scale" in n]
    for name, values in expect.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    pyconv.convert(src, tmp_path / "bf16.safetensors", outtype="bf16")
    with_torch = load_torch(str(tmp_path / "bf16.safetensors"))
    for name, values in expect.items():
        assert torch.equal(with_torch[name], torch.from_numpy(values).to(torch.bfloat16)), name


def test_a_torch_checkpoint_is_dequantized_too(fp8_model: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """The quantization_config applies whatever format holds the tensors: here a pytorch_model.bin."""
    src, expect = fp8_model
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(src / "config.json", folder / "config.json")
    torch.save(load_torch(str(src / "model.safetensors")), folder / "pytorch_model.bin")
    pyconv.convert(folder, tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))
    assert not [n for n in got if "scale" in n]
    for name, values in expect.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_inspect_shows_each_weight_with_its_scale(fp8_model: tuple[Path, dict[str, np.ndarray]]) -> None:
    src, _ = fp8_model
    r = run_cli("inspect", src)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("model.layers.0.mlp.up_proj.weight "))
    assert "f8_e4m3" in line and "× model.layers.0.mlp.up_proj.weight_scale_inv[32×32] → f32" in line
    assert "weight_scale_inv " not in r.stdout


def test_partial_blocks_and_any_view_of_the_codes(tiny_base: Path, tmp_path: Path) -> None:
    """Blocks that do not divide the weights (DeepSeek's 576-row projections) and codes read through
    llama.cpp's Q/K row permutation: each value still meets its own block's scale."""
    src = tmp_path / "partial"
    expect = write_quantized(tiny_base, src, {**FP8_CONFIG, "weight_block_size": [48, 40]}, fp8_block((48, 40)))
    pyconv.convert(src, tmp_path / "out.safetensors")
    got = load_file(str(tmp_path / "out.safetensors"))
    for name, values in expect.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    pyconv.convert(src, tmp_path / "out.gguf", outtype="f32")
    reader = gguf.GGUFReader(tmp_path / "out.gguf")
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    w = expect["model.layers.0.self_attn.q_proj.weight"]
    heads = 4
    permuted = w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(np.asarray(q.data).reshape(w.shape), permuted)


def test_hf_output_equals_transformers_dequantized_model(fp8_model: tuple[Path, dict[str, np.ndarray]],
                                                         tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config

    src, _ = fp8_model
    out = tmp_path / "hf"
    pyconv.convert(src, out, to="hf")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    ours = AutoModelForCausalLM.from_pretrained(out).state_dict()
    theirs = AutoModelForCausalLM.from_pretrained(src, quantization_config=FineGrainedFP8Config(dequantize=True),
                                                  device_map="cpu").state_dict()
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        assert torch.equal(ours[name], t), name


def test_llama_cpp_runs_a_gguf_of_the_fp8_model(fp8_model: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """llama.cpp's logits from GGUF files made of the FP8 checkpoint are those transformers computes with
    the dequantized weights; Q8_0 is bit-exact with gguf-py's quantizer of those weights."""
    src, expect = fp8_model
    reference = tmp_path / "reference"
    shutil.copytree(src, reference)
    config = json.loads((reference / "config.json").read_text())
    del config["quantization_config"]
    (reference / "config.json").write_text(json.dumps(config))
    tensors = load_torch(str(src / "model.safetensors"))
    plain = {n: t.numpy() for n, t in tensors.items() if not n.endswith("_scale_inv") and n not in expect}
    save_file({**plain, **expect}, str(reference / "model.safetensors"), metadata={"format": "pt"})
    want = hf_logits(reference, PROMPT_IDS)

    pyconv.convert(src, tmp_path / "f32.gguf", outtype="f32")
    got = llama_logits(load_llama(tmp_path / "f32.gguf"), PROMPT_IDS)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)

    pyconv.convert(src, tmp_path / "q8.gguf", outtype="q8_0")
    reader = gguf.GGUFReader(tmp_path / "q8.gguf")
    down = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    assert down.tensor_type == gguf.GGMLQuantizationType.Q8_0
    w = expect["model.layers.1.mlp.down_proj.weight"]
    assert bytes(down.data) == gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0).tobytes()
    got = llama_logits(load_llama(tmp_path / "q8.gguf"), PROMPT_IDS)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


@pytest.mark.parametrize(("kind", "strategy", "scale_dtype"), [("float", "tensor", torch.float32),
                                                                ("float", "channel", torch.bfloat16),
                                                                ("int", "channel", torch.float32)])
def test_compressed_tensors_decode_to_the_formula(tiny_base: Path, tmp_path: Path, kind: str, strategy: str,
                                                  scale_dtype: torch.dtype) -> None:
    src = tmp_path / "ct"
    expect = write_quantized(tiny_base, src, compressed_config(kind, strategy), compressed(kind, strategy, scale_dtype))
    out = tmp_path / "hf"
    pyconv.convert(src, out, to="hf")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    got = load_file(str(out / "model.safetensors"))
    assert not [n for n in got if "scale" in n]
    for name, values in expect.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_f8_decoding_is_exact_for_every_byte() -> None:
    raw = np.arange(256, dtype=np.uint8)
    for name, torch_type in (("f8_e4m3", torch.float8_e4m3fn), ("f8_e5m2", torch.float8_e5m2)):
        ours = np.frombuffer(pyconv._core.cast(raw.tobytes(), name, "f32"), np.float32)
        theirs = torch.from_numpy(raw).view(torch_type).float().numpy()
        nan = np.isnan(theirs)
        assert np.array_equal(np.isnan(ours), nan), name
        assert np.array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32)), name


def _one_line_error(args: list[str | Path], *needles: str) -> str:
    r = run_cli("convert", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_quantization_is_refused_in_one_line(fp8_model: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    src, _ = fp8_model
    gptq = tmp_path / "gptq"
    shutil.copytree(src, gptq)
    config = json.loads((gptq / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (gptq / "config.json").write_text(json.dumps(config))
    _one_line_error([gptq, "-o", tmp_path / "a.safetensors"], "config.json", "'gptq'")
    assert not (tmp_path / "a.safetensors").exists()

    bare = tmp_path / "bare"  # the scales are there, the config that says what they are is not
    shutil.copytree(src, bare)
    del config["quantization_config"]
    (bare / "config.json").write_text(json.dumps(config))
    _one_line_error([bare, "-o", tmp_path / "b.gguf"], "weight_scale_inv", "no quantization_config")
    assert not (tmp_path / "b.gguf").exists()


def test_malformed_fp8_checkpoints_are_refused(tiny_base: Path, tmp_path: Path) -> None:
    src = tmp_path / "fp8"
    write_quantized(tiny_base, src, FP8_CONFIG, fp8_block((32, 32)))
    wrong_block = tmp_path / "wrong-block"
    shutil.copytree(src, wrong_block)
    config = json.loads((wrong_block / "config.json").read_text())
    config["quantization_config"]["weight_block_size"] = [16, 32]
    (wrong_block / "config.json").write_text(json.dumps(config))
    _one_line_error([wrong_block, "-o", tmp_path / "a.safetensors"], "weight_scale_inv", "needs [")

    missing = tmp_path / "missing-scale"
    shutil.copytree(src, missing)
    tensors = {n: t for n, t in load_torch(str(src / "model.safetensors")).items()
               if n != "model.layers.0.mlp.up_proj.weight_scale_inv"}
    save_torch(tensors, str(missing / "model.safetensors"))
    _one_line_error([missing, "-o", tmp_path / "b.safetensors"], "up_proj.weight", "without its weight_scale_inv")

    stray = tmp_path / "stray"  # another quantizer's tensor that the fp8 config does not explain
    shutil.copytree(src, stray)
    tensors = {**load_torch(str(src / "model.safetensors")), "model.layers.0.mlp.up_proj.qzeros": torch.zeros(4, 4)}
    save_torch(tensors, str(stray / "model.safetensors"))
    _one_line_error([stray, "-o", tmp_path / "c.safetensors"], "up_proj.qzeros", "does not explain")


@pytest.fixture(scope="session")
def gpt_oss_experts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Expert tensors as gpt-oss stores them (u8 *_blocks [E, rows, G, 16] and *_scales [E, rows, G]) beside
    a plain one, with exponents around 127 and every nibble value."""
    gen = torch.Generator().manual_seed(3)
    out = tmp_path_factory.mktemp("gpt-oss")
    tensors = {"model.layers.0.mlp.experts.gate_up_proj_blocks": torch.randint(0, 256, (2, 8, 3, 16), generator=gen,
                                                                                dtype=torch.uint8),
               "model.layers.0.mlp.experts.gate_up_proj_scales": torch.randint(118, 134, (2, 8, 3), generator=gen,
                                                                                dtype=torch.uint8),
               "model.layers.0.mlp.experts.gate_up_proj_bias": torch.randn(2, 8, generator=gen)}
    save_torch(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"dtype": "float32", "quantization_config": {"quant_method": "mxfp4"}}))
    return out, tensors


def test_mxfp4_experts_decode_as_transformers_does(gpt_oss_experts: tuple[Path, dict[str, torch.Tensor]],
                                                   tmp_path: Path) -> None:
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    src, tensors = gpt_oss_experts
    blocks, scales = (tensors[f"model.layers.0.mlp.experts.gate_up_proj_{k}"] for k in ("blocks", "scales"))
    # transformers hands gpt-oss its experts as [E, in, out]; the checkpoint's (and pyconv's) order is [E, out, in]
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32).transpose(1, 2)
    pyconv.convert(src, tmp_path / "f32.safetensors")
    got = load_torch(str(tmp_path / "f32.safetensors"))
    assert set(got) == {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.gate_up_proj_bias"}
    assert torch.equal(got["model.layers.0.mlp.experts.gate_up_proj"], theirs)
    pyconv.convert(src, tmp_path / "bf16.safetensors", outtype="bf16")
    got = load_torch(str(tmp_path / "bf16.safetensors"))
    assert torch.equal(got["model.layers.0.mlp.experts.gate_up_proj"], theirs.to(torch.bfloat16))


def test_mxfp4_blocks_without_scales_are_refused(gpt_oss_experts: tuple[Path, dict[str, torch.Tensor]],
                                                 tmp_path: Path) -> None:
    src, tensors = gpt_oss_experts
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    save_torch({n: t for n, t in tensors.items() if not n.endswith("_scales")}, str(broken / "model.safetensors"))
    _one_line_error([broken, "-o", tmp_path / "a.safetensors"], "gate_up_proj_blocks")


def test_mxfp4_experts_repack_into_gguf_without_requantizing(gpt_oss_experts: tuple[Path, dict[str, torch.Tensor]],
                                                             tmp_path: Path) -> None:
    """The GGUF type the codes already are is what the target picks, and the engine moves their bits into
    ggml's blocks: the scale byte, then byte j holding elements j and j + 16 (ggml's block_mxfp4)."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    from pyconv import engine
    from pyconv.options import ConvertOptions
    from pyconv.plan import OutFile, OutTensor, Plan, View
    from pyconv.sources.opening import open_checkpoint
    from pyconv.targets.gguf import TypeRules, packed, tensor_type

    src, tensors = gpt_oss_experts
    weight = open_checkpoint(src).tensors["model.layers.0.mlp.experts.gate_up_proj"]
    rules = TypeRules.of(ConvertOptions.of(outtype="q8_0"), "gpt-oss", None)
    kind = gguf.MODEL_TENSOR.FFN_GATE_UP_EXP
    assert tensor_type(rules, weight.value_dtype, kind, "x.weight", weight.shape, packed_as=packed(weight))[0] == "mxfp4"
    floats = TypeRules.of(ConvertOptions.of(outtype="bf16"), "gpt-oss", None)
    assert tensor_type(floats, weight.value_dtype, kind, "x.weight", weight.shape, packed_as=packed(weight))[0] == "bf16"

    out = tmp_path / "experts.gguf"
    plan = Plan([OutFile(out.name, "gguf")], [OutTensor.from_view("blk.0.ffn_gate_up_exps.weight", View.of(weight), "mxfp4")])
    engine.execute(plan, [out], threads=2, chunk_bytes=64)
    stored = next(iter(gguf.GGUFReader(out).tensors))
    assert stored.tensor_type == gguf.GGMLQuantizationType.MXFP4
    blocks = tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"].numpy()
    scales = tensors["model.layers.0.mlp.experts.gate_up_proj_scales"].numpy()
    codes = np.stack([blocks & 0xF, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    want = np.concatenate([scales[..., None], codes[..., :16] | (codes[..., 16:] << 4)], axis=-1)
    assert np.asarray(stored.data).tobytes() == want.astype(np.uint8).tobytes()
    values = gguf.quants.dequantize(np.asarray(stored.data), gguf.GGMLQuantizationType.MXFP4)
    theirs = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    # ggml reads code 8 (-0) as +0, the only difference a value can show
    np.testing.assert_array_equal(values.reshape(weight.shape), theirs.transpose(1, 2).numpy() + 0.0)
