"""Splitting tensors over files: Hugging Face's shard rule and file names."""

from __future__ import annotations


def assign_shards(sizes: list[int], max_bytes: int | None, max_count: int | None = None) -> list[int]:
    """Shard index per tensor, in order: a shard closes when the next tensor would push it past
    ``max_bytes`` or ``max_count`` tensors; a tensor larger than the byte limit gets a shard of its own."""
    out, shard, used, count = [], 0, 0, 0
    for size in sizes:
        if count and ((max_bytes is not None and used + size > max_bytes) or (max_count and count >= max_count)):
            shard, used, count = shard + 1, 0, 0
        out.append(shard)
        used += size
        count += 1
    return out


def shard_name(stem: str, index: int, count: int, suffix: str) -> str:
    """``model-00001-of-00003.safetensors`` style names (1-based), or ``stem + suffix`` alone."""
    if count == 1:
        return f"{stem}{suffix}"
    return f"{stem}-{index + 1:05d}-of-{count:05d}{suffix}"
