"""Synthetic LLaMA-shaped checkpoints, generated and written tensor by tensor (never whole in RAM).

Weights are seeded N(0, 0.02^2) in bf16 (norms are ones), so every run converts the same bytes.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SHARD_BYTES = 2_000_000_000


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        h, i, kv = self.hidden, self.intermediate, self.hidden // self.heads * self.kv_heads
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
            ]
        out.append(("model.norm.weight", (h,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.vocab, h)))
        return out

    @property
    def params(self) -> int:
        return sum(int(np.prod(s)) for _n, s in self.tensors())

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "hidden_act": "silu", "tie_word_embeddings": self.tied, "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 2,
        }


# Every shape but 300m (the ZeRO run, which needs no tokenizer) has SmolLM2's 49152-token vocabulary,
# so that one tokenizer fits them all: a 32000-row embedding cannot hold its ids.
SHAPES = {
    "tiny": LlamaShape(256, 688, 2, 4, 2, 49152),  # 0.03 B parameters, 0.05 GB bf16: for trying the jobs out
    "300m": LlamaShape(1024, 2816, 20, 16, 16, 32000),
    "1b": LlamaShape(2048, 5632, 22, 32, 4, 49152),  # TinyLlama-1.1B shapes: 1.17 B parameters, 2.34 GB bf16
    "3b": LlamaShape(3200, 8640, 26, 32, 32, 49152),  # OpenLLaMA-3B shapes: 3.54 B, 7.1 GB
    "7b": LlamaShape(4096, 11008, 32, 32, 32, 49152),  # LLaMA-2-7B shapes: 6.88 B, 13.8 GB
}


def _bf16_random(shape: tuple[int, ...], seed: int, out: np.ndarray) -> None:
    rng = np.random.default_rng(seed)
    flat = out.reshape(-1)
    step = 1 << 22
    for i in range(0, flat.size, step):
        x = rng.standard_normal(min(step, flat.size - i), dtype=np.float32) * np.float32(0.02)
        flat[i:i + x.size] = (x.view(np.uint32) >> 16).astype(np.uint16)


def write_checkpoint(shape: LlamaShape, folder: Path, shard_bytes: int = SHARD_BYTES) -> list[Path]:
    """Write ``model-0000i-of-0000N.safetensors`` + index + config.json into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = shape.tensors()
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, s in tensors:
        size = int(np.prod(s)) * 2
        if used and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, s))
        used += size
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, members in zip(names, shards):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        pos = 0
        for name, s in members:
            n = int(np.prod(s)) * 2
            header[name] = {"dtype": "BF16", "shape": list(s), "data_offsets": [pos, pos + n]}
            pos += n
            weight_map[name] = fname
        blob = json.dumps(header).encode()
        blob += b" " * ((8 - len(blob) % 8) % 8)
        with (folder / fname).open("wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for name, s in members:
                buf = np.empty(s, dtype=np.uint16)
                if name.endswith("norm.weight"):
                    buf.fill(0x3F80)  # bf16 1.0
                else:
                    _bf16_random(s, zlib.crc32(name.encode()), buf)
                f.write(buf.tobytes())
    total = sum(int(np.prod(s)) * 2 for _n, s in tensors)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps(shape.config(), indent=2))
    return [folder / n for n in names]


def ensure_checkpoint(size: str, root: Path) -> tuple[Path, list[Path]]:
    """The checkpoint for ``size`` under ``root``, generated on first use."""
    folder = root / f"llama-{size}-bf16"
    done = folder / ".complete"
    shape = asdict(SHAPES[size])
    try:
        record = json.loads(done.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("shape") != shape:  # missing, unfinished, or made for another definition of the size
        if folder.exists():
            shutil.rmtree(folder)
        shards = write_checkpoint(SHAPES[size], folder)
        record = {"shape": shape, "shards": [p.name for p in shards]}
        done.write_text(json.dumps(record))
    return folder, [folder / n for n in record["shards"]]
