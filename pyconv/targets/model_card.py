"""README.md for a Hugging Face folder: what the model is, how pyconv made it, the files' fingerprints
and how to load it."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from ..plan import OutTensor
from ..version import __version__

# transformers' Auto class for a head, by the suffix of the architecture's class name
AUTO_CLASSES = (("ForCausalLM", "AutoModelForCausalLM"), ("LMHeadModel", "AutoModelForCausalLM"),
                ("ForMaskedLM", "AutoModelForMaskedLM"), ("ForSequenceClassification", "AutoModelForSequenceClassification"))
SHAPE_FIELDS = ("hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
                "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings", "n_positions")


def auto_class(config: dict[str, Any]) -> str:
    arch = (config.get("architectures") or [""])[0]
    # a folder with its own code names the Auto class of each of its classes
    mapped = next((auto for auto, ref in (config.get("auto_map") or {}).items()
                   if auto != "AutoConfig" and isinstance(ref, str) and arch and ref.endswith(f".{arch}")), None)
    return mapped or next((auto for suffix, auto in AUTO_CLASSES if arch.endswith(suffix)), "AutoModel")


def render(*, config: dict[str, Any], tensors: list[OutTensor], source: Path, source_kind: str, options: dict[str, Any],
           fingerprints: dict[str, str] | None, source_hashes: dict[str, str] | None, has_tokenizer: bool,
           usage: list[str] | None = None) -> str:
    """The card; ``usage`` replaces the generic loading snippet (families whose use needs more than loading)."""
    arch = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
    params = sum(math.prod(t.shape) for t in tensors)
    dtypes = sorted({t.dtype for t in tensors})
    auto = auto_class(config)
    shape = ", ".join(f"{k} {config[k]}" for k in SHAPE_FIELDS if k in config)
    lines = ["---", "library_name: transformers", "tags:", "- pyconv", "---", "", f"# {source.name}", "",
             f"A `{arch}` model (`model_type: {config.get('model_type', '?')}`) of {params:,} parameters "
             f"stored as {', '.join(dtypes)}; {shape}.", "",
             "## How it was converted", "",
             f"pyconv {__version__} converted the {source_kind} checkpoint `{source.name}` on "
             f"{datetime.datetime.now(datetime.timezone.utc).date().isoformat()}, streaming every tensor from the "
             "source files to its place in the output (no model was loaded into memory).", ""]
    if options:
        lines += ["Options: " + ", ".join(f"`{k}={v}`" for k, v in sorted(options.items())) + ".", ""]
    lines += ["Tied weights follow transformers 5: "
              + ("the output head is the token embedding (`tie_word_embeddings: true`)."
                 if config.get("tie_word_embeddings") else "the output head is stored on its own (`tie_word_embeddings: false`)."), ""]
    lines += ["## Fingerprints", ""]
    if fingerprints:
        lines += ["| file | sha256 |", "|---|---|"] + [f"| `{name}` | `{digest}` |" for name, digest in sorted(fingerprints.items())]
        if source_hashes:
            lines += ["", "Source files:", ""] + [f"- `{name}`: `{digest}`" for name, digest in sorted(source_hashes.items())]
        else:
            lines += ["", "Source files not hashed (`--hash-inputs` adds them)."]
    else:
        lines += ["Not computed (converted with `--no-fingerprint`)."]
    if usage is not None:
        return "\n".join(lines + ["", *usage, ""])
    # a folder with its own modeling code loads only when the user trusts it
    remote = ", trust_remote_code=True" if "auto_map" in config else ""
    lines += ["", "## How to load it", "", "```python", "import torch",
              f"from transformers import {auto}" + (", AutoTokenizer" if has_tokenizer else ""), "",
              f'model = {auto}.from_pretrained("path/to/this/folder", dtype=torch.float32{remote})']
    if has_tokenizer:
        lines += ['tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")']
    lines += ["```", "", "Check it with `pyconv validate path/to/this/folder --reference SOURCE`.", ""]
    return "\n".join(lines)
