"""Checks for folders that carry their own modeling code (``targets/hf_custom.py``): the code the folder
ships is what loaded, loading said nothing, and the behaviour the family promises holds. NeoBERT: the
fill-mask pipeline end to end, every attention-mask spelling, padding invariance, and sentence similarity
when the weights are trained; nanoMoE: the trainer's tuple outputs, the loss with labels, greedy
``generate()`` and a ``save_pretrained`` round trip.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .report import Report

MASK_TOLERANCE = 1e-5
PROBE_TEXTS = ("The capital of France is Paris.", "A man is playing a guitar on the stage tonight.",
               "Water boils at one hundred degrees.")
# share of masked words a trained masked LM puts in its top 5; random weights recover next to none
TRAINED_RECOVERY = 0.5
NEW_TOKENS = 4


def custom_checks(folder: Path, model: Any, ids: Any, messages: list[str], report: Report) -> None:
    """Runs the family's checks when the folder has an ``auto_map``; nothing for other folders."""
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" not in config:
        return
    modules = {ref.split(".")[0] for ref in config["auto_map"].values()}
    loaded = type(model).__module__.rsplit(".", 1)[-1]
    report.add("custom code", "pass" if loaded in modules else "fail",
               f"{type(model).__name__} from the folder's {loaded}.py (auto_map names {', '.join(sorted(modules))})")
    report.add("init warnings", "fail" if messages else "pass",
               f"{len(messages)} warning(s) while loading" + (f", first: {messages[0][:200]}" if messages else ""))
    model_type = config.get("model_type")
    if model_type == "neobert":
        _neobert(folder, model, report)
    elif model_type == "nanomoe_gpt":
        _nanomoe(model, ids, report)


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=True)


def _fill_mask(folder: Path, model: Any, tok: Any, report: Report) -> None:
    import torch
    from transformers import pipeline

    text = f"The capital of France is {tok.mask_token}."
    fill = pipeline("fill-mask", model=model, tokenizer=tok, top_k=5)
    predictions = fill(text)
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, int((ids[0] == tok.mask_token_id).nonzero()[0])].softmax(-1)
    want = probs.topk(5)
    agree = [p["token"] for p in predictions] == want.indices.tolist() and all(
        abs(p["score"] - float(v)) <= MASK_TOLERANCE for p, v in zip(predictions, want.values))
    report.add("fill-mask", "pass" if agree else "fail",
               f"pipeline on {text!r}: {', '.join(repr(p['token_str']) for p in predictions)}"
               + ("" if agree else "; not the model's own top 5"))


def _masks_and_padding(model: Any, tok: Any, report: Report) -> None:
    import torch

    batch = tok(list(PROBE_TEXTS), padding=True, return_tensors="pt")
    ids, keep = batch["input_ids"], batch["attention_mask"]

    def logits(**kwargs: Any) -> Any:
        with torch.no_grad():
            return model(**kwargs).logits

    spelled = {"int": keep, "bool": keep.bool(),
               "additive": torch.zeros(keep.shape).masked_fill(keep == 0, float("-inf"))}
    outs = {name: logits(input_ids=ids, attention_mask=mask) for name, mask in spelled.items()}
    full = int(keep.sum(1).argmax())
    row = ids[full:full + 1]
    diffs = {name: float((out - outs["int"])[keep.bool()].abs().max()) for name, out in outs.items()}
    diffs["none vs all-ones"] = float((logits(input_ids=row) - logits(input_ids=row, attention_mask=keep[full:full + 1]))
                                      .abs().max())
    worst = max(diffs.values())
    report.add("attention-mask parity", "pass" if worst <= MASK_TOLERANCE else "fail",
               f"int, bool and additive masks agree, and no mask equals all-ones: max |Δ| {worst:.3g}", diffs=diffs)
    padded, scale = 0.0, 1.0
    for i in range(len(PROBE_TEXTS)):
        n = int(keep[i].sum())
        alone = logits(input_ids=ids[i:i + 1, :n])[0]
        padded = max(padded, float((outs["int"][i, :n] - alone).abs().max()))
        scale = max(scale, float(alone.abs().max()))
    # padding changes the shapes the matmuls run at, so float32 sums differ by rounding, relative to the logits
    report.add("padding invariance", "pass" if padded <= MASK_TOLERANCE * scale else "fail",
               f"each sentence padded in a batch vs alone: max |Δ| {padded:.3g} on its real tokens "
               f"(limit {MASK_TOLERANCE * scale:.3g})")


def _recovery(model: Any, tok: Any) -> float:
    """Share of the probe sentences' words the model puts back in its top 5 when each is masked alone."""
    import torch

    hits = total = 0
    for text in PROBE_TEXTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        special = set(tok.all_special_ids)
        for pos in range(ids.shape[1]):
            if int(ids[0, pos]) in special:
                continue
            masked = ids.clone()
            masked[0, pos] = tok.mask_token_id
            with torch.no_grad():
                top = model(input_ids=masked).logits[0, pos].topk(5).indices
            hits += int(ids[0, pos]) in top.tolist()
            total += 1
    return hits / max(total, 1)


def _similarity(model: Any, tok: Any, report: Report) -> None:
    recovered = _recovery(model, tok)
    if recovered < TRAINED_RECOVERY:
        report.add("similarity", "skip", f"the weights look untrained (they put {recovered:.0%} of masked probe words in "
                   f"their top 5, a trained masked LM over {TRAINED_RECOVERY:.0%}), so sentence similarity tells nothing")
        return

    from .hf import SIMILAR_ABOVE, UNRELATED_BELOW, similarity_cosines

    similar, unrelated = similarity_cosines(model.base_model, tok)
    ok = similar > SIMILAR_ABOVE and unrelated < UNRELATED_BELOW
    report.add("similarity", "pass" if ok else "fail",
               f"mean-pooled cosine {similar:.2f} for a paraphrase (> {SIMILAR_ABOVE}), {unrelated:.2f} for unrelated "
               f"sentences (< {UNRELATED_BELOW}); the weights put {recovered:.0%} of masked probe words in their top 5",
               similar=similar, unrelated=unrelated, recovered=recovered)


def _neobert(folder: Path, model: Any, report: Report) -> None:
    tok = _tokenizer(folder)
    _fill_mask(folder, model, tok, report)
    _masks_and_padding(model, tok, report)
    _similarity(model, tok, report)


def _nanomoe(model: Any, ids: Any, report: Report) -> None:
    import torch
    from torch.nn import functional as F
    from transformers import AutoModelForCausalLM

    ids = ids[:, : int(model.config.sequence_len) - NEW_TOKENS]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        as_tuple = model(input_ids=ids, labels=ids, return_dict=False)
    logits, loss, losses = as_tuple
    want = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    ok = (torch.equal(logits, out.logits) and torch.equal(loss, out.loss) and bool(torch.isclose(loss, want))
          and set(losses) == {"ntp_loss", "aux_loss", "router_z_loss"})
    report.add("tuple outputs", "pass" if ok else "fail",
               f"return_dict=False gives (logits, loss, losses); loss with labels {float(loss):.4g} is next-token "
               f"cross-entropy ({float(want):.4g})")
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False)
        greedy = ids
        for _ in range(NEW_TOKENS):
            greedy = torch.cat((greedy, model(input_ids=greedy).logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    report.add("generate", "pass" if torch.equal(generated, greedy) else "fail",
               f"generate() adds {NEW_TOKENS} tokens, the same as a greedy loop over forward()")
    # saving imports optional integrations (DeepSpeed) that print to stdout, which --json keeps for the report
    with tempfile.TemporaryDirectory(prefix="pyconv-resave-") as tmp, contextlib.redirect_stdout(sys.stderr):
        model.save_pretrained(tmp)
        again = AutoModelForCausalLM.from_pretrained(tmp, trust_remote_code=True, local_files_only=True,
                                                     dtype=torch.float32).eval()
        with torch.no_grad():
            same = torch.equal(again(input_ids=ids).logits, out.logits)
    report.add("save_pretrained", "pass" if same else "fail",
               "the loaded model re-saved and loaded again gives " + ("the same logits" if same else "other logits"))
