"""Pre-quantized checkpoints made from a tiny transformers llama with each format's own formulas, and
the weights those formulas give back (numpy, f32), which pyconv's outputs are checked against."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# the projections quantizers convert; embeddings, norms and the head stay in the model's type
PROJECTION = re.compile(r"\.(q|k|v|o|gate|up|down)_proj\.weight$")
E4M3_MAX = 448.0


def _grid(w: torch.Tensor, block: tuple[int, int]) -> tuple[int, int]:
    return -(-w.shape[0] // block[0]), -(-w.shape[1] // block[1])


def _expand(scale: np.ndarray, shape: tuple[int, ...], block: tuple[int, int]) -> np.ndarray:
    """Each scale repeated over its block, cut to the weight's shape (partial blocks at the ends)."""
    return np.repeat(np.repeat(scale, block[0], axis=0), block[1], axis=1)[:shape[0], :shape[1]]


def quantize_fp8_blocks(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3's block quantization: scale_inv = amax / 448 per block, codes = e4m3(w / scale_inv)."""
    rows, cols = _grid(w, block)
    scale = torch.empty(rows, cols, dtype=torch.float32)
    wf = w.float()
    for r in range(rows):
        for c in range(cols):
            tile = wf[r * block[0]:(r + 1) * block[0], c * block[1]:(c + 1) * block[1]]
            scale[r, c] = tile.abs().max().clamp(min=1e-12) / E4M3_MAX
    full = torch.from_numpy(_expand(scale.numpy(), tuple(w.shape), block))
    return (wf / full).to(torch.float8_e4m3fn), scale


def dequantized(codes: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> np.ndarray:
    """The format's formula in numpy: code (exact in f32) times the scale of its block, in f32."""
    q = codes.float().numpy()
    return q * _expand(scale.float().numpy().reshape(_grid(codes, block)), tuple(codes.shape), block)


def write_quantized(base: Path, out: Path, quantization_config: dict[str, Any],
                    quantize: Any) -> dict[str, np.ndarray]:
    """``base`` with every projection replaced by what ``quantize(name, w)`` returns ({suffix: tensor},
    and the f32 weight its formula gives back); returns those weights by name."""
    shutil.copytree(base, out)
    tensors = load_file(str(base / "model.safetensors"))
    written: dict[str, torch.Tensor] = {}
    expect: dict[str, np.ndarray] = {}
    for name, w in tensors.items():
        if not PROJECTION.search(name):
            written[name] = w
            continue
        stored, values = quantize(name, w)
        for suffix, t in stored.items():
            written[name + suffix] = t.contiguous()
        expect[name] = values
    save_file(written, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return expect


def fp8_block(block: tuple[int, int]) -> Any:
    def quantize(_name: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        codes, scale = quantize_fp8_blocks(w, block)
        return {"": codes, "_scale_inv": scale}, dequantized(codes, scale, block)
    return quantize


def compressed(kind: str, strategy: str, scale_dtype: torch.dtype) -> Any:
    """compressed-tensors' symmetric 8-bit schemes: scale = amax / qmax per tensor or output channel."""
    qmax = E4M3_MAX if kind == "float" else 127.0

    def quantize(_name: str, w: torch.Tensor) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        wf = w.float()
        amax = wf.abs().amax(dim=1, keepdim=True) if strategy == "channel" else wf.abs().max().reshape(1)
        scale = (amax / qmax).to(scale_dtype)
        scaled = wf / scale.float()
        codes = scaled.to(torch.float8_e4m3fn) if kind == "float" else scaled.round().clamp(-128, 127).to(torch.int8)
        values = codes.float().numpy() * scale.float().numpy()
        return {"": codes, "_scale": scale}, values
    return quantize


def compressed_config(kind: str, strategy: str) -> dict[str, Any]:
    return {"quant_method": "compressed-tensors", "format": f"{kind}-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                          "weights": {"num_bits": 8, "type": kind, "symmetric": True,
                                                      "strategy": strategy, "dynamic": False}}},
            "ignore": ["lm_head"]}
