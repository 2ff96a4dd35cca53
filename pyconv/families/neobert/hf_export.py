"""NeoBERT trainer checkpoints as ``NeoBERTLMHead`` folders (``reader.py`` reads them).

The training names stay (our modeling code keeps the trainer's module tree); the layout fixes are views:
a packed SwiGLU ``ffn.w12`` [2I', H] is cut into ``w1`` (its first half, the gate) and ``w2``, a tied
decoder is left to ``tie_word_embeddings``, and a legacy decoder bias is dropped only when the user
allows it, with the change that makes to the logits. The fused QKV stays as it is: the modeling code
reads it grouped per head, as the trainer does. The tokenizer is padded to the model's vocabulary the
way the trainer pads it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import numpy as np

from ... import dtypes
from ...errors import ConversionError
from ...options import ConvertOptions
from ...plan import OutTensor, View
from ...sources.base import SourceTensor, byte_range
from ...sources.checkpoint import Checkpoint
from ...targets.gguf import small_values
from ...targets.hf_model import HfTensors
from ...targets.hf_tokenizer import copied, normalize, vocab_ids
from ...targets.regions import split_rows
from . import model as neobert
from .reader import TOKENIZER, NeobertTrainerCheckpoint

log = logging.getLogger("pyconv")

W12 = re.compile(r"^(model\.transformer_encoder\.\d+\.ffn\.)w12\.weight$")
SPACE_MARK = "\u2581"
SMALL_READ = 1 << 16


def _values(t: SourceTensor) -> np.ndarray:
    """A 1-d tensor's values as float32, read in pieces small enough for ``small_values``."""
    item = int(dtypes.info(t.dtype)["block_bytes"])
    step = SMALL_READ // item
    pieces = [small_values(SourceTensor(t.name, t.dtype, (min(step, t.numel - at),),
                                        byte_range(t.segments, at * item, min(at + step, t.numel) * item)))
              for at in range(0, t.numel, step)]
    return np.concatenate(pieces)


def _drop_bias(t: SourceTensor, opts: ConvertOptions, ck: Checkpoint) -> str:
    if not opts.hf.allow_decoder_bias_drop:
        raise ConversionError("the masked-LM decoder has a bias (chandar-lab's head), which the export drops only with "
                              "--allow-decoder-bias-drop: without it every logit would change", file=ck.path, tensor=t.name)
    bias = _values(t)
    # the bias is added to every position's logits alike, so these are the changes on any probe input
    report = (f"decoder.bias dropped (--allow-decoder-bias-drop): each logit of each token on any input, a probe "
              f"sentence included, moves by minus its bias: max |Δlogit| {float(np.abs(bias).max()):.4g}, mean "
              f"{float(np.abs(bias).mean()):.4g}; log-probabilities move by at most "
              f"{float(bias.max() - bias.min()):.4g}")
    log.warning("%s", report)
    return report


def _tokenizer(ck: Checkpoint, config: dict[str, Any]) -> dict[str, bytes]:
    """The run's tokenizer with ``model_max_length`` the model's context and placeholder tokens up to its vocabulary."""
    folder = ck.folder / TOKENIZER
    files = copied(folder)
    if "tokenizer.json" not in files:
        raise ConversionError("no tokenizer.json: the export needs the run's fast tokenizer", file=folder)
    size, have = int(config["vocab_size"]), len(set(vocab_ids(files).values()))
    if have > size:
        raise ConversionError(f"the tokenizer has {have} tokens, the model only {size} embeddings", file=folder)
    doc = json.loads(files["tokenizer.json"])
    tcfg = json.loads(files.get("tokenizer_config.json", b"{}"))
    for i in range(have, size):
        entry = {"content": neobert.EXTRA_TOKEN.format(i), "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": True, "special": False}
        doc.setdefault("added_tokens", []).append({"id": i, **entry})
        if isinstance(tcfg.get("added_tokens_decoder"), dict):
            tcfg["added_tokens_decoder"][str(i)] = entry
    tcfg["model_max_length"] = int(config["max_position_embeddings"])
    files["tokenizer.json"] = json.dumps(doc, ensure_ascii=False).encode()
    files["tokenizer_config.json"] = json.dumps(tcfg, indent=2, ensure_ascii=False).encode()
    return normalize(files, config, folder)


def recognises(ck: Checkpoint) -> bool:
    return isinstance(ck, NeobertTrainerCheckpoint)


def neobert_tensors(ck: Checkpoint, opts: ConvertOptions) -> HfTensors:
    assert isinstance(ck, NeobertTrainerCheckpoint) and ck.config is not None and ck.weights is not None  # the reader builds them
    config = json.loads(json.dumps(ck.config))
    width = neobert.ffn_width(config)
    tied = bool(config["tie_word_embeddings"])
    out: list[OutTensor] = []
    notes = [f"NeoBERT trainer checkpoint ({ck.weights.format_name}) → {neobert.ARCHITECTURE}, decoder "
             + ("tied to the embedding" if tied else "untied")]
    for name, t in ck.tensors.items():
        if name == "decoder.bias":
            notes.append(_drop_bias(t, opts, ck))
            continue
        if name == "decoder.weight" and tied:
            continue
        whole = OutTensor.from_view(name, View.of(t), t.dtype)
        if m := W12.match(name):
            # xformers' packed SwiGLU: the gate's rows come first
            out += split_rows(whole, [f"{m[1]}w1.weight", f"{m[1]}w2.weight"], [width, width])
            continue
        out.append(whole)
    return HfTensors(out, None, config, notes, tokenizer=_tokenizer(ck, config))


def _metaspace(files: dict[str, bytes]) -> bool:
    """A tokenizer that marks word starts with ▁ (Metaspace) and has ▁ alone as a token."""
    if "tokenizer.json" not in files:
        return False
    doc = json.loads(files["tokenizer.json"])
    found = '"Metaspace"' in json.dumps([doc.get("pre_tokenizer"), doc.get("normalizer")])
    return found and SPACE_MARK in vocab_ids(files)


def neobert_usage(config: dict[str, Any], files: dict[str, bytes]) -> list[str]:
    """Fill-mask and embedding snippets; with a Metaspace tokenizer the fill-mask one drops the lone ▁ that a
    space typed before the mask becomes (training never saw one there: a masked word's ▁ is masked with it)."""
    lines = ["## How to use it", "",
             "The folder carries its own modeling code (`modeling_neobert.py`, `rotary.py`), so transformers "
             "loads it with `trust_remote_code=True`.", "", "```python", "import torch",
             "from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer", "",
             'folder = "path/to/this/folder"', "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)",
             "model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)", "",
             'ids = tokenizer(f"Paris is the {tokenizer.mask_token} of France.")["input_ids"]']
    if _metaspace(files):
        lines += [f"# The Metaspace tokenizer makes the space typed before the mask a token of its own, \"{SPACE_MARK}\",",
                  "# which training never put before a mask: drop it.",
                  f'space = tokenizer.convert_tokens_to_ids("{SPACE_MARK}")',
                  "ids = [t for i, t in enumerate(ids[:-1]) if not (t == space and ids[i + 1] == tokenizer.mask_token_id)]"
                  " + ids[-1:]"]
    lines += ["with torch.no_grad():", "    logits = model(input_ids=torch.tensor([ids])).logits",
              "top = logits[0, ids.index(tokenizer.mask_token_id)].topk(5)",
              "print(tokenizer.convert_ids_to_tokens(top.indices.tolist()))", "",
              "# sentence embeddings: the encoder's last hidden states, mean-pooled over real tokens",
              "encoder = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)",
              'batch = tokenizer(["A man is playing a guitar.", "Someone plays a guitar."], padding=True, '
              'return_tensors="pt")',
              "with torch.no_grad():", "    hidden = encoder(**batch).last_hidden_state",
              'keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)',
              "embeddings = (hidden * keep).sum(1) / keep.sum(1)", "print(embeddings.shape)", "```", "",
              "Check it with `pyconv validate path/to/this/folder`.", ""]
    info = config.get("training_info")
    if info:
        lines += ["## Training", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | `{value}` |" for key, value in info.items()]
    return lines
