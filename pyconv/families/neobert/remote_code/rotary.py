"""Rotary position embedding as NeoBERT trains it.

NeoBERT rotates adjacent channel pairs (2i, 2i+1) of each head, GPT-J style, with base 10000. The
``rotate_half`` convention of most transformers models pairs channel i with i + head_dim/2 instead and
gives different numbers on the same weights, so it must not be substituted here.
"""

from __future__ import annotations

import torch

ROPE_BASE = 10000.0


def rotary_tables(head_dim: int, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, pair) angle, float32, shaped [seq_len, head_dim // 2]."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (ROPE_BASE**exponents)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [batch, seq, heads, head_dim] pair by pair; computed in float32 like the trainer."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs.unbind(-1)
    # broadcast the [seq, pairs] tables over batch and heads
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)
