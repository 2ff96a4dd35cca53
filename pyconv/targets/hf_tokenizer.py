"""Tokenizer files for a Hugging Face folder: copied from beside the weights and normalized, or made
from a GGUF file's ``tokenizer.ggml.*`` metadata by transformers' own GGUF tokenizer reader.

Normalized means: ``model_max_length`` is an integer (transformers writes 1e30 when it does not know,
which tools that read the file as JSON choke on), special tokens named in ``tokenizer_config.json`` and
``special_tokens_map.json`` agree and exist in the vocabulary, and config.json's bos/eos/pad ids are the
tokenizer's when the config leaves them out (ids past the vocabulary are dropped).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..sources.json_files import load_json

log = logging.getLogger("pyconv")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "spiece.model", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
# placeholder lengths transformers uses for "unknown" (int(1e30) and friends)
UNBOUNDED = 10**18
ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


@contextmanager
def tokenizer_shapes(folder: Path) -> Iterator[None]:
    """Tokenizer files are read by key and index as transformers writes them; an error from a field of
    another shape (a vocab entry that is null, a token list that is a number) is the files' fault and
    ends in one line naming their folder."""
    try:
        yield
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"the tokenizer files here are not shaped as transformers writes them ({type(e).__name__}: {e})",
                              file=folder) from None


def _content(token: Any) -> str | None:
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def vocab_ids(files: dict[str, bytes]) -> dict[str, int]:
    """Token → id from tokenizer.json (model vocab and added tokens) or vocab.txt."""
    if "tokenizer.json" in files:
        doc = json.loads(files["tokenizer.json"])
        model = doc.get("model") or {}
        vocab = model.get("vocab")
        ids: dict[str, int] = {}
        if isinstance(vocab, dict):
            ids.update(vocab)
        elif isinstance(vocab, list):  # Unigram: [piece, score] by id
            ids.update({piece[0]: i for i, piece in enumerate(vocab)})
        ids.update({t["content"]: t["id"] for t in doc.get("added_tokens") or []})
        return ids
    if "vocab.txt" in files:
        return {line: i for i, line in enumerate(files["vocab.txt"].decode("utf-8").split("\n")) if line}
    return {}


def _context_length(config: dict[str, Any]) -> int | None:
    return next((int(config[k]) for k in CONTEXT_FIELDS if isinstance(config.get(k), (int, float))), None)


def normalize(files: dict[str, bytes], config: dict[str, Any], where: Path) -> dict[str, bytes]:
    """The tokenizer files with their settings made consistent; fills missing special ids in ``config``."""
    if "tokenizer_config.json" not in files:
        return files
    tcfg = json.loads(files["tokenizer_config.json"])
    length = tcfg.get("model_max_length")
    if not isinstance(length, (int, float)) or length >= UNBOUNDED:
        context = _context_length(config)
        if context is not None:
            tcfg["model_max_length"] = context
        else:
            tcfg.pop("model_max_length", None)
    else:
        tcfg["model_max_length"] = int(length)
    smap = json.loads(files["special_tokens_map.json"]) if "special_tokens_map.json" in files else None
    vocab = vocab_ids(files)
    for key in SPECIAL_KEYS:
        token = _content(tcfg.get(key))
        if smap is not None:
            mapped = _content(smap.get(key))
            if token is None and mapped is not None:
                tcfg[key], token = mapped, mapped
            elif token is not None and mapped != token:
                smap[key] = token
        if token is None or not vocab:
            continue
        if token not in vocab:
            raise ConversionError(f"{key} {token!r} is not in the tokenizer's vocabulary", file=where / "tokenizer_config.json")
        id_field = f"{key[:-len('_token')]}_token_id"
        if id_field in ("bos_token_id", "eos_token_id", "pad_token_id"):
            have = config.get(id_field)
            if have is None:
                config[id_field] = vocab[token]
            elif vocab[token] != have and not (isinstance(have, list) and vocab[token] in have):
                log.warning("config.json %s is %s but the tokenizer's %s %r is id %d; kept as the config says",
                            id_field, have, key, token, vocab[token])
    out = dict(files)
    out["tokenizer_config.json"] = (json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n").encode()
    if smap is not None:
        out["special_tokens_map.json"] = (json.dumps(smap, indent=2, ensure_ascii=False) + "\n").encode()
    return out


def copied(folder: Path) -> dict[str, bytes]:
    """The tokenizer files in ``folder``. The JSON ones must hold JSON objects: they are read here and by
    everything that loads the export."""
    files = {name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()}
    for name, data in files.items():
        if name.endswith(".json") and not isinstance(load_json(data, folder / name, "is not valid JSON"), dict):
            raise ConversionError("is not a JSON object", file=folder / name)
    return files


def from_gguf(path: Path) -> dict[str, bytes]:
    """transformers' reading of the GGUF tokenizer, saved the way it saves tokenizers."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:  # transformers raises ValueError/KeyError/NotImplementedError per tokenizer kind
        log.warning("%s: transformers cannot build a tokenizer from its metadata (%s); the folder gets none: pass "
                    "--tokenizer with the model's tokenizer folder to copy one", path, e)
        return {}
    with tempfile.TemporaryDirectory(prefix="pyconv-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        return copied(Path(tmp))


def drop_ids_outside_vocab(config: dict[str, Any]) -> None:
    """Special ids the embedding has no row for (GPT2Config's default 50256 in a small model) make
    transformers warn on every load and mean nothing: they are left out, with a warning."""
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int):
        return
    for key in ID_FIELDS:
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        bad = [i for i in ids if isinstance(i, int) and not 0 <= i < vocab]
        if bad:
            kept = [i for i in ids if i not in bad]
            log.warning("config.json %s %s is outside the vocabulary (%d tokens); left out", key, value, vocab)
            config[key] = kept if isinstance(value, list) and kept else None


def tokenizer_files(source: Path, gguf_file: Path | None, config: dict[str, Any]) -> dict[str, bytes]:
    """Normalized tokenizer files: from the GGUF when given, else those in ``source`` (a folder or a file
    beside them); config.json's special ids checked against the vocabulary and the tokenizer."""
    drop_ids_outside_vocab(config)
    folder = source if source.is_dir() else source.parent
    files = from_gguf(gguf_file) if gguf_file is not None else copied(folder)
    with tokenizer_shapes(folder):
        return normalize(files, config, folder)
