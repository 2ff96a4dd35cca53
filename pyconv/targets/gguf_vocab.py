"""Tokenizer files to ``tokenizer.ggml.*`` metadata, the way llama.cpp reads them.

Three vocab kinds: SentencePiece (``tokenizer.model`` → "llama"), byte-level BPE from
``tokenizer.json`` (→ "gpt2", with the pre-tokenizer named the way llama.cpp names it: by hashing
the ids of a fixed text) and WordPiece (→ "bert"). Special ids, add_bos/add_eos, merges and the
chat template come from gguf-py's ``SpecialVocab``, the same reader llama.cpp's converter uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import gguf

from ..errors import ConversionError
from .hf_tokenizer import tokenizer_shapes

# gguf token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (int(t) for t in (
    gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
    gguf.TokenType.UNUSED, gguf.TokenType.BYTE))
SPACE_MARK = "\u2581"


@cache
def _pre_tokenizer_table() -> dict[str, Any]:
    with (Path(__file__).parent / "data" / "bpe_pre_tokenizers.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def pre_tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the ids of llama.cpp's check text, as its converter computes it."""
    ids = tokenizer.encode(_pre_tokenizer_table()["check_text"]).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def pre_tokenizer_name(tokenizer: Any, path: Path) -> str:
    digest = pre_tokenizer_hash(tokenizer)
    name = _pre_tokenizer_table()["names_by_hash"].get(digest)
    if name is None:
        raise ConversionError(f"llama.cpp does not know this BPE pre-tokenizer (check hash {digest}); "
                              "pass --tokenizer-pre NAME to name one it knows", file=path)
    return str(name)


def looks_special(text: str) -> bool:
    """Added tokens some models forget to mark special; llama.cpp's converter treats them as control."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>")) or (text.startswith("<unused") and text.endswith(">")))


@dataclass
class Vocab:
    model: str                      # tokenizer.ggml.model
    pre: str | None                 # tokenizer.ggml.pre
    tokens: list[str | bytes]
    token_types: list[int]
    scores: list[float] | None = None


def filler_token(filler: str | None, i: int) -> tuple[str, int]:
    """Text and type of id ``i`` past the tokenizer's: an unused placeholder, or the token the family's
    trainer adds there (typed as any added token of that text)."""
    if filler is None:
        return f"[PAD{i}]", UNUSED
    text = filler.format(i)
    return (text, CONTROL) if looks_special(text) else (text.replace(SPACE_MARK, " "), USER_DEFINED)


def _sentencepiece(folder: Path, vocab_size: int | None, filler: str | None) -> Vocab:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(folder / "tokenizer.model"))
    n = vocab_size or sp.vocab_size()
    fillers = [filler_token(filler, i) for i in range(n)]
    tokens: list[str | bytes] = [text.encode() for text, _ in fillers]
    scores = [-10000.0] * n
    types = [kind for _, kind in fillers]
    for i in range(min(n, sp.vocab_size())):
        tokens[i] = sp.IdToPiece(i).encode()
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    added = folder / "added_tokens.json"
    if added.is_file():
        for text, i in json.loads(added.read_text(encoding="utf-8")).items():
            if i < n:
                tokens[i], scores[i], types[i] = text.encode(), -1000.0, USER_DEFINED
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        for key, entry in json.loads(cfg.read_text(encoding="utf-8")).get("added_tokens_decoder", {}).items():
            i, text = int(key), entry["content"]
            if i >= n:
                continue
            if entry.get("special") or looks_special(text):
                types[i] = CONTROL
            else:
                text, types[i] = text.replace(SPACE_MARK, " "), USER_DEFINED
            tokens[i], scores[i] = text.encode(), -1000.0
    return Vocab("llama", "default", tokens, types, scores)


def _from_tokenizer_json(path: Path, vocab_size: int | None, pre: str | None, filler: str | None) -> Vocab:
    from tokenizers import Tokenizer

    doc = json.loads(path.read_text(encoding="utf-8"))
    kind = doc.get("model", {}).get("type")
    if kind == "BPE" and doc["model"].get("byte_fallback"):
        # SentencePiece converted to tokenizer.json (Llama 2, Mistral): llama.cpp reads it as "llama"
        hf = gguf.LlamaHfVocab(path.parent)
        tokens: list[str | bytes] = []
        scores: list[float] = []
        types: list[int] = []
        for piece, score, toktype in hf.all_tokens():
            tokens.append(piece)
            scores.append(score)
            types.append(int(toktype))
        return Vocab("llama", "default", tokens, types, scores)
    if kind not in ("BPE", "WordPiece"):
        raise ConversionError(f"tokenizer model type {kind!r} is not supported for GGUF (BPE, WordPiece, SentencePiece)", file=path)
    tok = Tokenizer.from_file(str(path))
    vocab = tok.get_vocab(with_added_tokens=True)
    n = vocab_size or (max(vocab.values()) + 1)
    if max(vocab.values()) >= n:
        raise ConversionError(f"tokenizer has id {max(vocab.values())}, the model only {n} embeddings", file=path)
    by_id = {i: t for t, i in vocab.items()}
    added = tok.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            text, token_type = filler_token(filler, i)
            tokens.append(text)
            types.append(token_type)
            continue
        if i in added:
            entry = added[i]
            if not entry.normalized:  # llama.cpp expects added tokens pre-normalized
                text = tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
            if entry.special or looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace(SPACE_MARK, " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    if kind == "WordPiece":
        return Vocab("bert", pre or "default", phantom_space(tokens, types, doc["model"].get("continuing_subword_prefix", "##")), types)
    return Vocab("gpt2", pre or pre_tokenizer_name(tok, path), tokens, types)


def phantom_space(tokens: Sequence[str | bytes], types: Sequence[int], continuation: str) -> list[str | bytes]:
    """WordPiece pieces as llama.cpp's WPM tokenizer matches them: a word-initial piece starts with
    U+2581 and a continuation piece loses its prefix ("##ing" → "ing"). Control tokens stay as they are."""
    out: list[str | bytes] = []
    for text, kind in zip(tokens, types):
        if kind in (NORMAL, USER_DEFINED) and isinstance(text, str):
            out.append(text[len(continuation):] if continuation and text.startswith(continuation) else SPACE_MARK + text)
        else:
            out.append(text)
    return out


def load_vocab(folder: Path, vocab_size: int | None, *, tokenizer: Path | None = None, pre: str | None = None,
               filler: str | None = None) -> tuple[Vocab, Path]:
    """The vocabulary next to a checkpoint (or in ``tokenizer``'s folder), and the folder it came from;
    ids past the tokenizer's up to ``vocab_size`` are named by ``filler`` (see ``filler_token``)."""
    where = tokenizer.parent if tokenizer is not None else folder
    with tokenizer_shapes(where):
        if tokenizer is not None:
            if tokenizer.name == "tokenizer.model":
                return _sentencepiece(tokenizer.parent, vocab_size, filler), tokenizer.parent
            return _from_tokenizer_json(tokenizer, vocab_size, pre, filler), tokenizer.parent
        if (folder / "tokenizer.model").is_file():
            return _sentencepiece(folder, vocab_size, filler), folder
        if (folder / "tokenizer.json").is_file():
            return _from_tokenizer_json(folder / "tokenizer.json", vocab_size, pre, filler), folder
    raise ConversionError("no tokenizer.json or tokenizer.model next to the checkpoint; pass --tokenizer", file=folder)


def add_vocab(writer: gguf.GGUFWriter, vocab: Vocab, folder: Path) -> None:
    """Write the vocabulary and the special tokens into a gguf-py writer used as a KV collector."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list([t.encode() if isinstance(t, str) else t for t in vocab.tokens])
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    try:
        special = gguf.SpecialVocab(folder, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
        special.add_to_gguf(writer, quiet=True)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # gguf-py reads config.json and the tokenizer files itself and trusts the shapes of their fields
        raise ConversionError(f"gguf-py cannot read the special tokens from the config and tokenizer files here "
                              f"({type(e).__name__}: {e})", file=folder) from None
