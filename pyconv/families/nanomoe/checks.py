"""What ``pyconv validate`` checks of a nanoMoE folder beyond what every folder gets: the trainer's tuple
outputs, the loss with labels, greedy ``generate()`` and a ``save_pretrained`` round trip."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...validate.report import Report

NEW_TOKENS = 4


def nanomoe_checks(_folder: Path, model: Any, ids: Any, report: Report) -> None:
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
        loaded: Any = AutoModelForCausalLM.from_pretrained(tmp, trust_remote_code=True, local_files_only=True,
                                                           dtype=torch.float32)
        again = loaded.eval()
        with torch.no_grad():
            same = torch.equal(again(input_ids=ids).logits, out.logits)
    report.add("save_pretrained", "pass" if same else "fail",
               "the loaded model re-saved and loaded again gives " + ("the same logits" if same else "other logits"))
