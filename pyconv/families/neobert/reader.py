"""NeoBERT trainer checkpoints: ``outputs/<run>/checkpoints/<step>/`` as its trainer saves them
(docs/custom-models.md, "NeoBERT").

The folder holds ``config.yaml`` (the whole run's settings; ``model:`` builds the network), the weights
as ``model.safetensors`` or as a DeepSpeed ZeRO checkpoint (in the folder, or under Accelerate's
``accelerate/``), ``tokenizer/`` and ``tokenizer_info.json``. Names come out as the training model's
(``model.*`` and ``decoder.*``), wrapper prefixes stripped and the legacy ``model.decoder.*`` moved to
``decoder.*``; ``config`` is the export's HF config.json, with the decoder tied when the checkpoint ties
it. Everything is checked against config.yaml before a byte moves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ...archs.config import checked_field
from ...errors import ConversionError
from ...options import ConvertOptions
from ...sources.base import SourceTensor, same_values
from ...sources.safetensors import open_safetensors
from ...sources.state_dict import StateDictCheckpoint
from ...sources.zero import open_zero
from ...sources.zero import recognises as is_zero
from . import model as neobert

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer"
TOKENIZER_INFO = "tokenizer_info.json"
# where Accelerate puts its own state (and DeepSpeed's rank files) in newer trainer revisions
ACCELERATE = "accelerate"
RUNTIME_PREFIXES = ("_orig_mod.", "module.")
LEGACY_DECODER = "model.decoder."
# a run's config.yaml holds a few hundred settings
MAX_YAML_VALUES = 100_000
# YAML 1.2's floats (core schema, without .inf/.nan which YAML 1.1 already reads); YAML 1.1 wants a dot
# and a signed exponent, so the `1e-5` people write by hand would be a string
YAML12_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


class _RunConfigLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints here
    """PyYAML's safe loader reading numbers as YAML 1.2 does."""


# integers match first (YAML 1.1's resolver is asked before this one), so only floats change
_RunConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+.0123456789"))


def _small(doc: Any) -> bool:
    """Whether ``doc`` holds at most MAX_YAML_VALUES values once its aliases are expanded. An alias shares
    the node it names, so a few lines of YAML can stand for billions of values (or for a loop), which
    anything walking the config (JSON, inspect) would expand."""
    todo, seen = [doc], 0
    while todo:
        value = todo.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            return False
        if isinstance(value, dict):
            todo += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            todo += value
    return True


def _run_config(folder: Path) -> dict[str, Any] | None:
    try:
        doc = yaml.load((folder / CONFIG).read_text(encoding="utf-8"), Loader=_RunConfigLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not _small(doc):
        raise ConversionError(f"its aliases expand to more than {MAX_YAML_VALUES} values", file=folder / CONFIG)
    return doc if isinstance(doc, dict) and isinstance(doc.get("model"), dict) else None


def recognises(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and _run_config(path) is not None


def default_output(folder: Path) -> Path:
    """``outputs/<run>/hf/<run>_<step>`` for ``outputs/<run>/checkpoints/<step>``, where the trainer's own
    exporter puts it."""
    run = folder.resolve().parent.parent
    return run / "hf" / f"{run.name}_{folder.resolve().name}"


def _weights(folder: Path, opts: ConvertOptions) -> StateDictCheckpoint:
    if (folder / WEIGHTS).is_file():
        return open_safetensors(folder / WEIGHTS)
    for candidate in (folder, folder / ACCELERATE):
        if candidate.is_dir() and is_zero(candidate):
            return open_zero(candidate, opts)
    raise ConversionError(f"no weights: neither {WEIGHTS} nor a DeepSpeed ZeRO checkpoint (here or in {ACCELERATE}/)",
                          file=folder)


def _legacy_decoder(tensors: dict[str, SourceTensor], where: Path) -> dict[str, SourceTensor]:
    """Older revisions kept the masked-LM decoder under ``model.decoder.``; the model has it at ``decoder.``."""
    out: dict[str, SourceTensor] = {}
    for name, t in tensors.items():
        new = "decoder." + name[len(LEGACY_DECODER):] if name.startswith(LEGACY_DECODER) else name
        if new in out or (new != name and new in tensors):
            raise ConversionError(f"both '{name}' and '{new}' are in the weights", file=where, tensor=name)
        out[new] = t if new == name else replace(t, name=new)
    return out


def _tied(model: dict[str, Any], tensors: dict[str, SourceTensor], where: Path) -> bool:
    """The checkpoint ties its decoder to the embedding: config.yaml says so, or the decoder is absent or holds
    the embedding's values (the trainer's portable file stores tied tensors under both names)."""
    head, embed = tensors.get("decoder.weight"), tensors["model.encoder.weight"]
    same = head is None or same_values(head, embed)
    stated = model.get("tie_word_embeddings")
    if stated is None:
        return same
    if stated and not same:
        raise ConversionError("config.yaml ties the decoder to the embedding, but the two hold different values",
                              file=where, tensor="decoder.weight")
    return bool(stated)


def _tokenizer_info(folder: Path, model: dict[str, Any]) -> dict[str, Any] | None:
    path = folder / TOKENIZER_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read it ({e})", file=path) from None
    if not isinstance(info, dict):
        raise ConversionError("is not a JSON object", file=path)
    for key, setting in (("pad_token_id", "pad_token_id"), ("vocab_size", "vocab_size")):
        if info.get(key) is not None and info[key] != model.get(setting):
            raise ConversionError(f"{key} is {info[key]} but config.yaml's model.{setting} is {model.get(setting)}: the "
                                  "tokenizer metadata is from another run", file=path)
    total = info.get("total_vocab_size")
    if isinstance(total, int) and isinstance(model.get("vocab_size"), int) and total > model["vocab_size"]:
        raise ConversionError(f"the tokenizer has {total} tokens, more than the model's {model['vocab_size']} "
                              "embeddings", file=path)
    return info


@dataclass
class NeobertTrainerCheckpoint(StateDictCheckpoint):
    format_name = "neobert"
    # the weights as their own format opened them (model.safetensors or a DeepSpeed ZeRO checkpoint)
    weights: StateDictCheckpoint | None = None
    tokenizer_info: dict[str, Any] | None = None
    run_config: dict[str, Any] = field(default_factory=dict)   # the whole config.yaml

    def details(self) -> dict[str, Any]:
        assert self.weights is not None  # the reader always opens them
        return {"weights": self.weights.format_name, **self.weights.details(), "tokenizer_info": self.tokenizer_info,
                "run_config": self.run_config}


def open_neobert_trainer(path: Path, opts: ConvertOptions) -> NeobertTrainerCheckpoint:
    run = _run_config(path)
    if run is None:
        raise ConversionError(f"{CONFIG} has no model: section", file=path / CONFIG)
    model = run["model"]
    config = neobert.hf_config(model, run, path / CONFIG)
    for name, value in config.items():
        checked_field(name, value, path / CONFIG)
    if not (path / TOKENIZER).is_dir():
        raise ConversionError(f"no {TOKENIZER}/ folder: the export ships the run's tokenizer, which the trainer saves "
                              "there", file=path)
    info = _tokenizer_info(path, model)
    weights = _weights(path, opts)
    weights.strip_prefixes(RUNTIME_PREFIXES)
    tensors = _legacy_decoder(weights.tensors, weights.path)
    # the expected shapes are listed layer by layer: a lying count would be walked to the end
    if config["num_hidden_layers"] > len(tensors):
        raise ConversionError(f"num_hidden_layers is {config['num_hidden_layers']}, more than the {len(tensors)} tensors "
                              "of the weights could make", file=path / CONFIG)
    neobert.check_shapes(config, {n: t.shape for n, t in tensors.items()}, weights.path)
    config["tie_word_embeddings"] = _tied(model, tensors, weights.path)
    if path.name.isdigit():
        config["training_info"]["step"] = int(path.name)
    return NeobertTrainerCheckpoint(path, tensors, weights.files, weights.metadata, config, weights=weights,
                                    tokenizer_info=info, run_config=run)
