"""A model's config.json as the tables read it: checked where a value sizes or divides something."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConversionError

# config.json fields that are counts or sizes (GGUF stores them as uint32) and fields that are positive
# numbers. A config comes from the user's files: where one of these holds anything else, the conversion
# stops at the field instead of dividing by it or handing it to the GGUF writer.
COUNT_FIELDS = frozenset({
    "hidden_size", "n_embd", "dim", "num_hidden_layers", "n_layer", "n_layers", "num_attention_heads", "n_head",
    "n_heads", "num_key_value_heads", "n_kv_heads", "head_dim", "intermediate_size", "n_inner", "hidden_dim",
    "vocab_size", "max_position_embeddings", "n_ctx", "n_positions", "max_sequence_length", "num_local_experts",
    "num_experts", "num_experts_per_tok"})
POSITIVE_FIELDS = frozenset({"rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "rope_theta"})


def checked_field(name: str, value: Any, file: Path | None) -> Any:
    """``value`` of config field ``name`` (from ``file``), refused when the field is a count, size or positive
    number and the value is not one."""
    if value is None:
        return None
    if name in COUNT_FIELDS and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 32):
        raise ConversionError(f"{name} is {value!r}, not a positive integer below 2^32", file=file)
    if name in POSITIVE_FIELDS and (not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf):
        raise ConversionError(f"{name} is {value!r}, not a positive number", file=file)
    return value


class Config(Mapping[str, Any]):
    """config.json with lookups that also see ``rope_parameters`` (transformers 5) and ``rope_scaling``.
    ``folder`` is where it was found, for the few settings kept in other files beside it."""

    def __init__(self, data: Mapping[str, Any], folder: Path | None = None) -> None:
        self.data = dict(data)
        self.folder = folder
        text = self.data.get("text_config")
        if isinstance(text, dict):  # multimodal wrappers keep the language model's fields here
            self.data = {**self.data, **text}

    @property
    def file(self) -> Path | None:
        return self.folder / "config.json" if self.folder else None

    def __getitem__(self, key: str) -> Any:
        return checked_field(key, self.data[key], self.file)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def rope(self) -> dict[str, Any]:
        for key in ("rope_parameters", "rope_scaling"):
            value = self.data.get(key)
            if isinstance(value, dict):
                value = value.get("full_attention", value)
                if not isinstance(value, dict):
                    raise ConversionError(f"{key} is {self.data[key]!r}, not rope settings", file=self.file)
                return value
        return {}

    def find(self, *names: str) -> Any:
        for name in names:
            if name in self.data and self.data[name] is not None:
                return checked_field(name, self.data[name], self.file)
            if name in self.rope and self.rope[name] is not None:
                return checked_field(name, self.rope[name], self.file)
        return None

    def require(self, *names: str) -> Any:
        value = self.find(*names)
        if value is None:
            raise ConversionError(f"config.json has none of {', '.join(names)}")
        return value
