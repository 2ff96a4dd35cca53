"""nanoMoE's GPT as a functional forward pass over a trainer-layout state dict.

Written from docs/custom-models.md, "nanoMoE": learned absolute positions, RMSNorm (eps 1e-6) before attention and MLP, a
contiguous [Q; K; V] ``c_attn``, weightless RMS QK-norm, causal softmax attention, ReLU² dense MLPs and MoE
layers where layer i is MoE iff n_exp > 1, i >= moe_start_layer and (i + 1) % stride == 0. The router takes
the top-k ``w_g`` logits and softmaxes them; experts are [E, in, out] matrices (Qwen3-style SwiGLU, or ReLU²).
Capacity is routed token by token with plain counters: all first choices in token order, then all second
choices; a choice whose expert is full is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class NanoMoEShape:
    vocab: int
    seq_len: int
    layers: int
    heads: int
    embd: int
    n_exp: int = 1
    top_k: int = 2
    stride: int = 1
    moe_start: int = 0
    qwen3: bool = True
    noisy: bool = False
    train_capacity: float = 1.25
    eval_capacity: float = 3.0
    min_capacity: int = 4
    aux_weight: float = 0.01
    z_weight: float = 0.00001

    def is_moe(self, layer: int) -> bool:
        return self.n_exp > 1 and layer >= self.moe_start and (layer + 1) % self.stride == 0


def trainer_state_dict(shape: NanoMoEShape, seed: int) -> dict[str, torch.Tensor]:
    """Random weights under the trainer's names; ``lm_head.weight`` equals ``transformer.wte.weight`` (tied)."""
    gen = torch.Generator().manual_seed(seed)
    c, inner = shape.embd, 4 * shape.embd

    def mat(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)

    def experts(fan_in: int, fan_out: int) -> torch.Tensor:
        return torch.randn(shape.n_exp, fan_in, fan_out, generator=gen) / math.sqrt(fan_in)

    wte = torch.randn(shape.vocab, c, generator=gen)
    sd = {"transformer.wte.weight": wte, "transformer.wpe.weight": 0.5 * torch.randn(shape.seq_len, c, generator=gen)}
    for i in range(shape.layers):
        p = f"transformer.h.{i}"
        sd[f"{p}.ln_1.weight"] = 1.0 + 0.2 * torch.randn(c, generator=gen)
        sd[f"{p}.ln_2.weight"] = 1.0 + 0.2 * torch.randn(c, generator=gen)
        sd[f"{p}.attn.c_attn.weight"] = mat(3 * c, c)
        sd[f"{p}.attn.c_proj.weight"] = mat(c, c)
        if shape.is_moe(i):
            sd[f"{p}.mlp.router.w_g.weight"] = 2.0 * mat(shape.n_exp, c)
            if shape.noisy:
                sd[f"{p}.mlp.router.w_noise.weight"] = mat(shape.n_exp, c)
            if shape.qwen3:
                sd[f"{p}.mlp.experts.gate_proj"] = experts(c, inner)
            sd[f"{p}.mlp.experts.c_fc"] = experts(c, inner)
            sd[f"{p}.mlp.experts.c_proj"] = experts(inner, c)
        else:
            sd[f"{p}.mlp.c_fc.weight"] = mat(inner, c)
            sd[f"{p}.mlp.c_proj.weight"] = mat(c, inner)
    sd["transformer.ln_f.weight"] = 1.0 + 0.2 * torch.randn(c, generator=gen)
    sd["lm_head.weight"] = wte
    return sd


def _rms(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    scaled = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return scaled if weight is None else scaled * weight


def _attention(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, seq, c = x.shape
    dh = c // heads
    q, k, v = (x @ sd[f"{p}.attn.c_attn.weight"].T).split(c, dim=-1)
    q, k, v = (t.reshape(batch, seq, heads, dh) for t in (q, k, v))
    eps = torch.finfo(x.dtype).eps
    q, k = _rms(q, None, eps), _rms(k, None, eps)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, seq, c)
    return out @ sd[f"{p}.attn.c_proj.weight"].T


@dataclass
class RouterRecord:
    dropped: int  # expert choices turned away because the expert was full
    aux_loss: torch.Tensor
    z_loss: torch.Tensor


def _moe(
    sd: dict[str, torch.Tensor], p: str, x: torch.Tensor, shape: NanoMoEShape, training: bool
) -> tuple[torch.Tensor, RouterRecord]:
    batch, seq, c = x.shape
    flat = x.reshape(-1, c)
    n = flat.shape[0]
    logits = flat @ sd[f"{p}.mlp.router.w_g.weight"].T
    if training and shape.noisy:
        # drawn from the global generator, as the trainer's randn_like does
        noise = torch.randn(n, shape.n_exp)
        logits = logits + F.softplus(flat @ sd[f"{p}.mlp.router.w_noise.weight"].T) * noise
    top, chosen = logits.topk(shape.top_k, dim=-1)
    gates = top.softmax(-1)

    factor = shape.train_capacity if training else shape.eval_capacity
    capacity = math.floor(shape.top_k * factor * n / shape.n_exp)
    capacity = max(capacity + capacity % 2, shape.min_capacity)
    up, down = sd[f"{p}.mlp.experts.c_fc"], sd[f"{p}.mlp.experts.c_proj"]
    out = torch.zeros_like(flat)
    filled = [0] * shape.n_exp
    dropped = 0
    for slot in range(shape.top_k):
        for token in range(n):
            e = int(chosen[token, slot])
            if filled[e] >= capacity:
                dropped += 1
                continue
            filled[e] += 1
            v = flat[token]
            hidden = F.silu(v @ sd[f"{p}.mlp.experts.gate_proj"][e]) * (v @ up[e]) if shape.qwen3 else torch.relu(v @ up[e]) ** 2
            out[token] += gates[token, slot] * (hidden @ down[e])

    full_gates = torch.zeros_like(logits).scatter(-1, chosen, gates)
    picked = torch.zeros(n, shape.n_exp)
    for slot in range(shape.top_k):
        picked[torch.arange(n), chosen[:, slot]] += 1
    aux = shape.n_exp * (full_gates.mean(0) * picked.mean(0)).sum()
    z = ((logits - logits.mean(-1, keepdim=True)).logsumexp(-1) ** 2 + logits.mean(-1) ** 2).mean()
    return out.reshape(batch, seq, c), RouterRecord(dropped, aux, z)


def forward(
    sd: dict[str, torch.Tensor], shape: NanoMoEShape, idx: torch.Tensor, *, training: bool = False
) -> tuple[torch.Tensor, list[RouterRecord]]:
    """Logits [batch, seq, vocab] and what each MoE layer's router did."""
    seq = idx.shape[1]
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:seq]
    records = []
    for i in range(shape.layers):
        p = f"transformer.h.{i}"
        x = x + _attention(sd, p, _rms(x, sd[f"{p}.ln_1.weight"], 1e-6), shape.heads)
        h = _rms(x, sd[f"{p}.ln_2.weight"], 1e-6)
        if shape.is_moe(i):
            moe_out, record = _moe(sd, p, h, shape, training)
            x = x + moe_out
            records.append(record)
        else:
            x = x + (torch.relu(h @ sd[f"{p}.mlp.c_fc.weight"].T) ** 2) @ sd[f"{p}.mlp.c_proj.weight"].T
    return _rms(x, sd["transformer.ln_f.weight"], 1e-6) @ sd["lm_head.weight"].T, records


def next_token_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())


def greedy(sd: dict[str, torch.Tensor], shape: NanoMoEShape, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    ids = prompt
    for _ in range(new_tokens):
        logits, _ = forward(sd, shape, ids)
        ids = torch.cat((ids, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return ids
