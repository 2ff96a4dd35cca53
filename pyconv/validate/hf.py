"""Checks for Hugging Face folders, through the libraries that define the format: safetensors reads every
weight file, transformers loads the model with no missing, unexpected or mismatched keys, the tokenizer
round-trips text, and the numbers agree with a reference model and across attention-mask forms."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..targets.model_card import auto_class
from .custom import custom_checks
from .report import Report
from .similarity import SIMILAR_ABOVE, UNRELATED_BELOW, similarity_cosines

SAMPLE_TEXTS = ("The capital of France is Paris.", "def add(a, b):\n    return a + b  # 42 ünïcödé")
# max |Δlogit| allowed against the reference, relative to the largest reference logit, by stored type
PARITY = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
MASK_TOLERANCE = 1e-5


@contextmanager
def recording() -> Iterator[list[str]]:
    """transformers' warnings (logged or raised) while loading, as text."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)


def _files(folder: Path, report: Report) -> bool:
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json missing")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        problems += [f"shard {s} missing" for s in shards if not (folder / s).is_file()]
    elif not (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").is_file():
        problems.append("no model.safetensors, index or pytorch_model.bin")
    if problems:
        report.add("files", "fail", "; ".join(problems))
        return False
    present = [n for n in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md") if (folder / n).is_file()]
    report.add("files", "pass", f"config.json, weights{''.join(', ' + n for n in present)}")
    return True


def _safetensors(folder: Path, report: Report) -> None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    count = 0
    for f in files:
        with safe_open(str(f), "pt") as handle:
            count += len(list(handle.keys()))
    if files:
        report.add("safetensors", "pass", f"the safetensors library reads {len(files)} file(s), {count} tensors")
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if bins:
        import torch

        n = sum(len(torch.load(b, weights_only=True, mmap=True)) for b in bins)
        report.add("pytorch_model.bin", "pass", f"torch.load(weights_only=True) reads {len(bins)} file(s), {n} tensors")


def _custom(folder: Path) -> bool:
    """The folder ships its own modeling code (an ``auto_map``): loading it means trusting that code."""
    return "auto_map" in json.loads((folder / "config.json").read_text())


def load_model(folder: Path, auto: str | None = None, gguf_file: str | None = None) -> tuple[Any, dict[str, Any], list[str]]:
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text()) if gguf_file is None else {}
    cls = getattr(transformers, auto or auto_class(config))
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    with recording() as messages:
        model, info = cls.from_pretrained(folder, dtype=torch.float32, output_loading_info=True,
                                          trust_remote_code="auto_map" in config, **extra)
    return model.eval(), info, messages


def _token_ids(folder: Path, model: Any, report: Report) -> Any:
    import torch

    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=_custom(folder))
    except Exception as e:  # no tokenizer files, or ones transformers cannot read
        report.add("tokenizer", "warn" if not (folder / "tokenizer_config.json").exists() else "fail", f"not loadable: {e}")
        vocab = int(model.config.vocab_size)
        return torch.arange(1, 13).remainder(vocab).unsqueeze(0)
    exact, stable = 0, 0
    for text in SAMPLE_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        back = tok.decode(ids, skip_special_tokens=True)
        exact += back == text
        stable += tok(back, add_special_tokens=False)["input_ids"] == ids
    ok = stable == len(SAMPLE_TEXTS)
    how = "decodes to the same text" if exact == len(SAMPLE_TEXTS) else "decodes to text that encodes to the same ids (normalizing tokenizer)"
    report.add("tokenizer", "pass" if ok else "fail", f"{type(tok).__name__} round-trips {len(SAMPLE_TEXTS)} sample texts: "
               + (how if ok else f"only {stable} of them"))
    return tok(SAMPLE_TEXTS[0], return_tensors="pt")["input_ids"]


def _outputs(model: Any, ids: Any, **kwargs: Any) -> Any:
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, **kwargs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _masks(model: Any, ids: Any, report: Report) -> None:
    import torch

    plain = _outputs(model, ids)
    ones = torch.ones_like(ids)
    variants = {"all-ones": ones, "int32": ones.to(torch.int32), "bool": ones.to(torch.bool)}
    diffs = {}
    for name, mask in variants.items():
        try:
            diffs[name] = float((_outputs(model, ids, attention_mask=mask) - plain).abs().max())
        except (TypeError, RuntimeError, ValueError):  # a model may refuse a mask dtype; the others still count
            continue
    worst = max(diffs.values(), default=0.0)
    report.add("attention mask", "pass" if diffs and worst <= MASK_TOLERANCE else "fail",
               f"no mask vs {', '.join(diffs)} masks: max |Δ| {worst:.3g}", diffs=diffs)


def _reference(folder: Path, model: Any, ids: Any, reference: Path, report: Report) -> None:
    ref, _info, _messages = load_model(reference.parent, auto_class(model.config.to_dict()), reference.name) \
        if reference.suffix == ".gguf" else load_model(reference, auto_class(model.config.to_dict()))
    ours, theirs = _outputs(model, ids), _outputs(ref, ids)
    diff = float((ours - theirs).abs().max())
    scale = max(1.0, float(theirs.abs().max()))
    config = json.loads((folder / "config.json").read_text())
    stored = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    limit = PARITY.get(stored, PARITY["float32"]) * scale
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    report.add("reference", "pass" if diff <= limit else "fail",
               f"max |Δ| {diff:.3g} against {reference.name} (limit {limit:.3g} for {stored}); top token agrees at {agree:.0%}",
               max_abs_diff=diff, top1_agreement=agree)


def _similarity(folder: Path, model: Any, report: Report) -> None:
    """Mean-pooled sentence embeddings of a sentence-transformers folder: a paraphrase must score high,
    an unrelated sentence low (random weights cannot)."""
    if not (folder / "modules.json").is_file():
        report.add("similarity", "skip", "no sentence-transformers modules.json: not a sentence-embedding model")
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    similar, unrelated = similarity_cosines(model, tok)
    ok = similar > SIMILAR_ABOVE and unrelated < UNRELATED_BELOW
    report.add("similarity", "pass" if ok else "fail",
               f"cosine {similar:.2f} for a paraphrase (> {SIMILAR_ABOVE}), {unrelated:.2f} for unrelated sentences "
               f"(< {UNRELATED_BELOW})", similar=similar, unrelated=unrelated)


def validate_hf(folder: Path, *, reference: Path | None = None) -> Report:
    report = Report(str(folder), "hf")
    if not _files(folder, report):
        return report
    _safetensors(folder, report)
    try:
        model, info, messages = load_model(folder)
    except Exception as e:  # whatever transformers raises on a broken folder is the finding
        report.add("load", "fail", f"transformers cannot load it: {type(e).__name__}: {e}")
        return report
    bad = {k: sorted(map(str, v)) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    report.add("load", "fail" if bad else "pass",
               f"{type(model).__name__}: " + ("; ".join(f"{k} {v[:3]}" for k, v in bad.items()) if bad
                                              else "no missing, unexpected or mismatched keys"), **bad)
    if messages:
        report.add("load warnings", "warn", f"{len(messages)} warning(s) while loading, first: {messages[0][:200]}",
                   warnings=messages)
    ids = _token_ids(folder, model, report)
    _masks(model, ids, report)
    custom_checks(folder, model, ids, messages, report)
    if reference is not None:
        _reference(folder, model, ids, reference, report)
    if auto_class(model.config.to_dict()) == "AutoModel":
        _similarity(folder, model, report)
    return report
