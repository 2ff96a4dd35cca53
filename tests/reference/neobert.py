"""NeoBERT's training model as a functional forward pass over a trainer-layout state dict.

Written from docs/custom-models.md, "NeoBERT": fused QKV grouped per head, RoPE on adjacent pairs through
complex multiplication (base 10000), SwiGLU with w1 gate / w2 up / w3 down at width 8*ceil(int(2I/3)/8) or an exact
GELU FFN, RMSNorm (float32 statistics) or LayerNorm, an additive key mask. The naive readings (Q/K/V as
contiguous thirds, ``rotate_half`` RoPE) can be selected so that tests can show they give other numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

QKVLayout = Literal["per_head", "thirds"]
RopePairs = Literal["adjacent", "halves"]


@dataclass(frozen=True)
class NeoBERTShape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_len: int
    pad_id: int = 0
    rope: bool = True
    rms_norm: bool = True
    act: Literal["swiglu", "gelu"] = "swiglu"
    eps: float = 1e-6
    decoder_bias: bool = False

    @property
    def ffn_width(self) -> int:
        if self.act == "gelu":
            return self.intermediate
        two_thirds = int(2 * self.intermediate / 3)
        return 8 * math.ceil(two_thirds / 8)


def trainer_state_dict(shape: NeoBERTShape, seed: int, num_labels: int | None = None) -> dict[str, torch.Tensor]:
    """Random weights under the trainer's key names (``NeoBERTLMHead``, or the classifier with ``num_labels``).

    Scales keep activations of order one so that every layout mistake moves the outputs visibly; norm
    weights and biases are perturbed away from 1 and 0 so that they matter too.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = shape.hidden, shape.ffn_width

    def mat(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)

    def norm(prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.weight": 1.0 + 0.2 * torch.randn(h, generator=gen)}
        if not shape.rms_norm:
            out[f"{prefix}.bias"] = 0.1 * torch.randn(h, generator=gen)
        return out

    sd: dict[str, torch.Tensor] = {"model.encoder.weight": torch.randn(shape.vocab, h, generator=gen)}
    if not shape.rope:
        sd["model.positional_embedding.weight"] = torch.randn(shape.max_len + 1, h, generator=gen)
    for i in range(shape.layers):
        p = f"model.transformer_encoder.{i}"
        sd[f"{p}.qkv.weight"] = mat(3 * h, h)
        sd[f"{p}.wo.weight"] = mat(h, h)
        if shape.act == "swiglu":
            sd[f"{p}.ffn.w1.weight"] = mat(w, h)
            sd[f"{p}.ffn.w2.weight"] = mat(w, h)
            sd[f"{p}.ffn.w3.weight"] = mat(h, w)
        else:
            sd[f"{p}.ffn.0.weight"] = mat(w, h)
            sd[f"{p}.ffn.2.weight"] = mat(h, w)
        sd.update(norm(f"{p}.attention_norm"))
        sd.update(norm(f"{p}.ffn_norm"))
    sd.update(norm("model.layer_norm"))
    if num_labels is None:
        sd["decoder.weight"] = mat(shape.vocab, h)
        if shape.decoder_bias:
            sd["decoder.bias"] = 0.5 * torch.randn(shape.vocab, generator=gen)
    else:
        sd["dense.weight"] = mat(h, h)
        sd["dense.bias"] = 0.1 * torch.randn(h, generator=gen)
        sd["classifier.weight"] = mat(num_labels, h)
        sd["classifier.bias"] = 0.1 * torch.randn(num_labels, generator=gen)
    return sd


def _normalise(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, shape: NeoBERTShape) -> torch.Tensor:
    weight = sd[f"{prefix}.weight"]
    if shape.rms_norm:
        mean_square = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() / torch.sqrt(mean_square + shape.eps)).to(x.dtype) * weight
    return F.layer_norm(x, (shape.hidden,), weight, sd[f"{prefix}.bias"], shape.eps)


def _rope(x: torch.Tensor, pairs: RopePairs) -> torch.Tensor:
    """x: [batch, seq, heads, head_dim]."""
    seq, dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2).float() / dim))
    angles = torch.outer(torch.arange(seq).float(), inv_freq)  # [seq, dim/2]
    if pairs == "adjacent":
        turn = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
        as_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], dim // 2, 2))
        return torch.view_as_real(as_complex * turn).flatten(-2).type_as(x)
    cos = torch.cat((angles.cos(), angles.cos()), -1)[None, :, None, :]
    sin = torch.cat((angles.sin(), angles.sin()), -1)[None, :, None, :]
    first, second = x[..., : dim // 2], x[..., dim // 2 :]
    return x * cos + torch.cat((-second, first), -1) * sin


def hidden_states(
    sd: dict[str, torch.Tensor],
    shape: NeoBERTShape,
    input_ids: torch.Tensor,
    pad_mask: torch.Tensor | None = None,
    *,
    qkv: QKVLayout = "per_head",
    rope_pairs: RopePairs = "adjacent",
) -> torch.Tensor:
    """Final-norm output [batch, seq, hidden]. ``pad_mask`` is the trainer's additive [batch, seq] key mask."""
    batch, seq = input_ids.shape
    h, heads = shape.hidden, shape.heads
    dh = h // heads
    x = sd["model.encoder.weight"][input_ids]
    if not shape.rope:
        real = (input_ids != shape.pad_id).long()
        x = x + sd["model.positional_embedding.weight"][torch.cumsum(real, 1) * real + shape.pad_id]
    for i in range(shape.layers):
        p = f"model.transformer_encoder.{i}"
        fused = _normalise(x, sd, f"{p}.attention_norm", shape) @ sd[f"{p}.qkv.weight"].T
        if qkv == "per_head":
            grouped = fused.view(batch, seq, heads, 3 * dh)
            q, k, v = grouped[..., :dh], grouped[..., dh : 2 * dh], grouped[..., 2 * dh :]
        else:
            q, k, v = (part.reshape(batch, seq, heads, dh) for part in fused.split(h, dim=-1))
        if shape.rope:
            q, k = _rope(q, rope_pairs), _rope(k, rope_pairs)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        if pad_mask is not None:
            scores = scores + pad_mask[:, None, None, :]
        attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, seq, h)
        x = x + attended @ sd[f"{p}.wo.weight"].T
        y = _normalise(x, sd, f"{p}.ffn_norm", shape)
        if shape.act == "swiglu":
            y = (F.silu(y @ sd[f"{p}.ffn.w1.weight"].T) * (y @ sd[f"{p}.ffn.w2.weight"].T)) @ sd[f"{p}.ffn.w3.weight"].T
        else:
            y = F.gelu(y @ sd[f"{p}.ffn.0.weight"].T) @ sd[f"{p}.ffn.2.weight"].T
        x = x + y
    return _normalise(x, sd, "model.layer_norm", shape)


def mlm_logits(sd: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    logits = hidden @ sd["decoder.weight"].T
    return logits + sd["decoder.bias"] if "decoder.bias" in sd else logits


def classifier_logits(sd: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """The trainer's head: first token, dense, tanh, classifier (dropout is off in eval)."""
    pooled = torch.tanh(hidden[:, 0] @ sd["dense.weight"].T + sd["dense.bias"])
    return pooled @ sd["classifier.weight"].T + sd["classifier.bias"]


def additive_pad_mask(keep: torch.Tensor) -> torch.Tensor:
    """The trainer's key mask: 0 where a token is kept, -inf where it is padding."""
    return torch.zeros(keep.shape).masked_fill(~keep.bool(), float("-inf"))
