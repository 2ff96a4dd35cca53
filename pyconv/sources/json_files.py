"""JSON files from the user's folders (config.json, index files, tokenizer files): however one is broken,
one error naming it, before any of it is trusted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConversionError


def load_json(text: bytes, path: Path, failure: str, **options: Any) -> Any:
    """``text`` (UTF-8 bytes from ``path``) as JSON; however it is broken, one error that starts with ``failure``."""
    try:
        return json.loads(text.decode("utf-8"), **options)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{failure} ({e})", file=path) from None
    except RecursionError:  # json recurses once per nesting level
        raise ConversionError(f"{failure} (nested too deeply)", file=path) from None


def read_config(folder: Path) -> dict[str, Any] | None:
    """``folder``'s config.json, if it has one, with the fields read everywhere checked."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    try:
        text = cfg.read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read config ({e})", file=cfg) from None
    doc = load_json(text, cfg, "cannot read config")
    if not isinstance(doc, dict):
        raise ConversionError("config is not a JSON object", file=cfg)
    # the two fields that name the model are read everywhere as transformers writes them
    names = doc.get("architectures")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ConversionError(f"architectures is {names!r}, not a list of class names", file=cfg)
    if doc.get("model_type") is not None and not isinstance(doc["model_type"], str):
        raise ConversionError(f"model_type is {doc['model_type']!r}, not a name", file=cfg)
    for key in ("quantization_config", "rope_scaling", "rope_parameters", "text_config"):  # settings looked up by key
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise ConversionError(f"{key} is {doc[key]!r}, not a mapping", file=cfg)
    return doc
