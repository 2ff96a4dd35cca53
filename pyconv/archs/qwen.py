"""Qwen2 (biased q/k/v projections) and Qwen3 (RMS-normed q and k per head): llama.cpp's ``qwen2`` and
``qwen3`` graphs rotate halves (NeoX style), the order HF checkpoints hold, so Q/K rows stay as they are."""

from __future__ import annotations

import gguf

from .base import Arch, register

QWEN2 = Arch(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    model_types=("qwen2",),
    gguf_arch=gguf.MODEL_ARCH.QWEN2,
)

QWEN3 = Arch(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    model_types=("qwen3",),
    gguf_arch=gguf.MODEL_ARCH.QWEN3,
)

register(QWEN2, QWEN3)
