"""Tiny BitNet checkpoints made by transformers' own BitNet model, in the forms BitNet ships (float
weights, weights already ternary, transformers' packed 2-bit format, the 1bitLLM naming), and
references for what their GGUF files must hold, computed with numpy and torch from the specs alone."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .archs_fixtures import copy_smollm2_tokenizer, perturb_vectors, rewrite_safetensors

# rows of 256 (TQ blocks) and 128 (I2_S blocks); SmolLM2's tokenizer (vocab 49152)
BITNET_SHAPE: dict[str, Any] = {
    "vocab_size": 49152, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 128, "initializer_range": 0.05, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2}
PROJECTION_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                       "up_proj.weight", "down_proj.weight")
# transformers' BitNet names -> the 1bitLLM checkpoints' names
ONEBIT_NAMES = {".self_attn.attn_sub_norm.": ".self_attn.inner_attn_ln.", ".mlp.ffn_sub_norm.": ".mlp.ffn_layernorm."}


def absmean_torch(w: torch.Tensor) -> torch.Tensor:
    """The weights BitNet's forward pass multiplies with (transformers' WeightQuant): absmean scale
    over the whole tensor in float32, round half to even, clamp, back in the weights' dtype."""
    w32 = w.float()
    s = 1.0 / w32.abs().mean().clamp(min=1e-5)
    return ((w32 * s).round().clamp(-1, 1) / s).to(w.dtype)


def build_bitnet(out: Path, smollm2: Path, *, hidden_act: str, ternary: bool, dtype: torch.dtype, seed: int) -> None:
    """A BitNetForCausalLM saved by transformers; ``ternary``: its projections replaced by the
    ternary weights its own forward pass would use, so a float forward computes the BitNet function."""
    from transformers import BitNetConfig, BitNetForCausalLM

    torch.manual_seed(seed)
    model = BitNetForCausalLM(BitNetConfig(**BITNET_SHAPE, hidden_act=hidden_act)).eval()
    perturb_vectors(model, seed)
    model = model.to(dtype)
    if ternary:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(PROJECTION_SUFFIXES):
                    p.copy_(absmean_torch(p))
    model.save_pretrained(out)
    copy_smollm2_tokenizer(smollm2, out)


def to_1bitllm(src: Path, out: Path) -> None:
    """The same weights as a 1bitLLM ``BitnetForCausalLM`` checkpoint (model_type llama, old sub-norm names)."""
    shutil.copytree(src, out)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(architectures=["BitnetForCausalLM"], model_type="llama")
    (out / "config.json").write_text(json.dumps(cfg))

    def rename(name: str) -> str:
        for new, old in ONEBIT_NAMES.items():
            name = name.replace(new, old)
        return name

    rewrite_safetensors(out, lambda state: {rename(k): v for k, v in state.items()})


def transformers_bitnet() -> Any:
    """transformers' BitNet integration module. Importing it applies torch.compile decorators, which
    warn that torch.jit.script_method is deprecated (torch's own code, not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", DeprecationWarning)
        from transformers.integrations import bitnet
    return bitnet


def to_packed(src: Path, out: Path, linear_class: str) -> dict[str, torch.Tensor]:
    """A ternary checkpoint in transformers' packed BitNet format: each projection's codes packed by
    transformers' ``pack_weights`` (u8, four output rows a byte) beside a bf16 ``weight_scale``, so
    that BitLinear (divides) or AutoBitLinear (multiplies) computes the source's weights. Returns
    the packed tensors by name."""
    pack_weights = transformers_bitnet().pack_weights
    shutil.copytree(src, out)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline"}
    (out / "config.json").write_text(json.dumps(cfg))
    packed: dict[str, torch.Tensor] = {}

    def pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in list(state):
            if name.endswith(PROJECTION_SUFFIXES):
                w = state.pop(name).float()
                magnitude = w.abs().max()
                state[name] = packed[name] = pack_weights(torch.sign(w).to(torch.int8))
                scale = 1.0 / magnitude if linear_class == "bitlinear" else magnitude
                state[name + "_scale"] = scale.reshape(1).to(torch.bfloat16)
        return state

    rewrite_safetensors(out, pack)
    return packed


def decode_i2s(raw: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, np.float32]:
    """An I2_S tensor's values and scale, read per docs/i2s.md (not through pyconv or gguf-py):
    element 32g + p of each 128-element block is bits 6 - 2g of the block's byte p, code c means
    (c - 1)·scale (3 reads as 0), the f32 scale follows the codes and 28 zero bytes end the tensor."""
    rows, cols = shape
    n = rows * cols
    assert len(raw) == n // 4 + 32 and raw[n // 4 + 4:] == bytes(28)
    packed = np.frombuffer(raw, np.uint8)[: n // 4].reshape(rows, cols // 128, 32)
    codes = np.stack([(packed >> (6 - 2 * g)) & 3 for g in range(4)], axis=2).reshape(rows, cols)
    scale = np.frombuffer(raw[n // 4:n // 4 + 4], "<f4")[0]
    return np.where(codes == 3, 0, codes.astype(np.float32) - 1) * scale, scale


def absmean_reference(w: np.ndarray, round_to: torch.dtype) -> np.ndarray:
    """docs/i2s.md's absmean in numpy: mean |W| summed in double and rounded once to f32 (what pyconv's
    engine promises; torch's f32 reduction can differ by an ulp), s = 1/max(mean, 1e-5),
    clamp(rint(W s), -1, 1)/s, rounded to the weights' dtype as the model's forward does."""
    f32 = np.float32
    mean = f32(np.abs(w.astype(np.float64)).sum() / w.size)
    s = f32(1) / np.maximum(mean, f32(1e-5))
    ternary = (np.clip(np.rint(w.astype(f32) * s), f32(-1), f32(1)) / s).astype(f32)
    return torch.from_numpy(ternary).to(round_to).float().numpy()
