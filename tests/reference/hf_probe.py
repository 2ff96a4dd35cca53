"""Run in a fresh interpreter: load exported folders the way a user would and record what happens.

``python hf_probe.py REQUEST RESULT`` reads a ``torch.save``-d list of jobs and writes a dict of results,
one per job name. Nothing from pyconv is imported here: the code under test reaches this process only as
the ``.py`` files inside the exported folders, through ``trust_remote_code=True``.

Job kinds:
- ``load``: ``<auto>.from_pretrained(dir, trust_remote_code=True, local_files_only=True, dtype=float32,
  output_loading_info=True)``; the loading info, every warning logged or raised while loading, the groups of
  parameter names sharing storage, and the outputs of each listed call (``forward``, ``generate`` or
  ``resize`` (``resize_token_embeddings``, which changes the model for the calls after it), in eval
  or train mode, optionally after seeding torch's generator, or expected to raise); optionally ``save_to``
  re-saves the loaded model with ``save_pretrained``.
- ``fresh``: build the model from the folder's config alone, and report each parameter's mean and std.
- ``fill_mask``: the ``fill-mask`` pipeline on a text, plus the tokens the folder's tokenizer makes of it.
- ``local_import``: import the folder's modeling module by file name (the folder on ``sys.path``, as the
  trainer's scripts do) and load with ``AutoModelForCausalLM`` without ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformers


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _recording_warnings() -> Iterator[list[str]]:
    """Everything transformers logs at warning level or above, and every Python warning, as text."""
    handler = _Collect()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    messages: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        messages.extend(handler.messages)


def _shared_storage(model: torch.nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(param.data_ptr(), []).append(name)
    return sorted(sorted(names) for names in groups.values() if len(names) > 1)


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value


def _run_call(model: torch.nn.Module, call: dict[str, Any]) -> Any:
    if call.get("raises"):
        try:
            _run_call(model, {**call, "raises": False})
        except Exception as exc:
            return {"raised": type(exc).__name__, "message": str(exc)}
        return {"raised": None}
    model.train(call.get("train", False))
    if "seed" in call:
        torch.manual_seed(call["seed"])
    try:
        with torch.no_grad():
            method = call.get("method", "forward")
            if method == "generate":
                return _detach(model.generate(**call["kwargs"]))
            if method == "resize":
                model.resize_token_embeddings(**call["kwargs"])
                return {"vocab_size": model.config.vocab_size, "shared": _shared_storage(model),
                        "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()}}
            output = model(**call["kwargs"])
    finally:
        model.eval()
    return _detach(dict(output) if isinstance(output, transformers.utils.ModelOutput) else output)


def _load(job: dict[str, Any]) -> dict[str, Any]:
    auto = getattr(transformers, job["auto"])
    with _recording_warnings() as messages:
        model, info = auto.from_pretrained(
            job["dir"],
            trust_remote_code=True,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    result: dict[str, Any] = {
        "class": type(model).__name__,
        "info": {k: sorted(map(str, v)) for k, v in info.items()},
        "warnings": messages,
        "shared": _shared_storage(model),
        "training": model.training,
        "outputs": {call["name"]: _run_call(model, call) for call in job.get("calls", [])},
    }
    if "save_to" in job:
        model.save_pretrained(job["save_to"])
    return result


def _fresh(job: dict[str, Any]) -> dict[str, Any]:
    config = transformers.AutoConfig.from_pretrained(job["dir"], trust_remote_code=True, local_files_only=True)
    with _recording_warnings() as messages:
        model = getattr(transformers, job["auto"]).from_config(config, trust_remote_code=True)
    params = dict(model.named_parameters())
    return {
        "warnings": messages,
        "shared": _shared_storage(model),
        "stats": {name: (p.mean().item(), p.std().item()) for name, p in params.items()},
    }


def _fill_mask(job: dict[str, Any]) -> dict[str, Any]:
    with _recording_warnings() as messages:
        fill = transformers.pipeline(
            "fill-mask",
            model=job["dir"],
            trust_remote_code=True,
            dtype=torch.float32,
            top_k=job["top_k"],
        )
        predictions = fill(job["text"])
    ids = fill.tokenizer(job["text"])["input_ids"]
    return {
        "predictions": predictions,
        "input_ids": ids,
        "tokens": fill.tokenizer.convert_ids_to_tokens(ids),
        "warnings": messages,
    }


def _local_import(job: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, job["dir"])
    module = importlib.import_module(job["module"])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["dir"], local_files_only=True, dtype=torch.float32)
    return {
        "class_module": type(model).__module__,
        "imported_module": module.__name__,
        "outputs": {call["name"]: _run_call(model, call) for call in job.get("calls", [])},
    }


_KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "load": _load,
    "fresh": _fresh,
    "fill_mask": _fill_mask,
    "local_import": _local_import,
}


def main(request: str, result: str) -> None:
    jobs: list[dict[str, Any]] = torch.load(request, weights_only=False)
    results: dict[str, dict[str, Any]] = {}
    for job in jobs:
        # one failing job must not hide the others: each test reads only its own
        try:
            results[job["name"]] = _KINDS[job["kind"]](job)
        except Exception:
            results[job["name"]] = {"error": traceback.format_exc()}
    torch.save(results, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
