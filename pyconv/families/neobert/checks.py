"""What ``pyconv validate`` checks of a NeoBERT folder beyond what every folder gets: the fill-mask pipeline
end to end, every attention-mask spelling, padding invariance, and sentence similarity when the weights
are trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...validate.report import Report
from ...validate.similarity import SIMILAR_ABOVE, UNRELATED_BELOW, similarity_cosines

MASK_TOLERANCE = 1e-5
PROBE_TEXTS = ("The capital of France is Paris.", "A man is playing a guitar on the stage tonight.",
               "Water boils at one hundred degrees.")
# share of masked words a trained masked LM puts in its top 5; random weights recover next to none
TRAINED_RECOVERY = 0.5


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

    similar, unrelated = similarity_cosines(model.base_model, tok)
    ok = similar > SIMILAR_ABOVE and unrelated < UNRELATED_BELOW
    report.add("similarity", "pass" if ok else "fail",
               f"mean-pooled cosine {similar:.2f} for a paraphrase (> {SIMILAR_ABOVE}), {unrelated:.2f} for unrelated "
               f"sentences (< {UNRELATED_BELOW}); the weights put {recovered:.0%} of masked probe words in their top 5",
               similar=similar, unrelated=unrelated, recovered=recovered)


def neobert_checks(folder: Path, model: Any, _ids: Any, report: Report) -> None:
    tok = _tokenizer(folder)
    _fill_mask(folder, model, tok, report)
    _masks_and_padding(model, tok, report)
    _similarity(model, tok, report)
