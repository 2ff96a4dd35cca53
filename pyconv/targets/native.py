"""Trainer checkpoints (``--to native``): a step folder per save and a pointer to the newest.

On disk::

    OUT/latest_step.txt                 the step number of the newest save, e.g. "1000"
    OUT/step_1000/config.json           the model's HF config plus a "pyconv_native" block:
                                        {"format": 1, "arch", "layout": "fused"|"hf", "tp_size", "step"}
    OUT/step_1000/model.safetensors     tp_size 1; else model-tp00-of-04.safetensors … one file per rank
    OUT/step_1000/<tokenizer files>     and generation_config.json, when the source has them

``--layout fused`` regroups the family's projections the way trainers fuse them (the table's
``fused`` entries: K and V as kv_proj, gate and up as gate_up_proj, GPT-2's Conv1D weights as
[out, in] with c_attn cut into q_proj and kv_proj); ``--layout hf`` keeps HF's tensors. Every tensor
is a view of the source, so HF → native → HF gives back the same bytes. With ``--tp-size N`` each rank
file holds that rank's slice by the rules in ``archs/tensor_parallel.py`` (fused layout only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import registry
from ..archs.arch import Arch
from ..archs.config import Config
from ..archs.hf_layout import template_pattern
from ..archs.native_layout import row_counts
from ..archs.tensor_parallel import sharding
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import OutFile, OutTensor, Plan
from ..sources.checkpoint import Checkpoint
from ..sources.native import LATEST, NATIVE_KEY, rank_file
from . import safetensors as st
from .hf_tensors import resize_vocab, source_dtype
from .hf_tokenizer import tokenizer_files
from .regions import concat, crop, split_rows, transpose

FORMAT = 1
LAYOUTS = ("fused", "hf")


def step_folder(step: int) -> str:
    return f"step_{step}"


def fuse(tensors: list[OutTensor], arch: Arch, cfg: Config) -> list[OutTensor]:
    """HF's tensors regrouped into the fused layout, each fused tensor where its first piece was."""
    by_name = {t.name: t for t in tensors}
    replaced: dict[str, list[OutTensor]] = {}  # first HF piece -> fused tensors
    consumed: set[str] = set()
    for group in arch.native.fused:
        pattern = template_pattern(group.hf[0].name)
        for name in list(by_name):
            m = pattern.match(name)
            if not m:
                continue
            bid, suffix = m["bid"] or "", m["suffix"]
            names = [p.name.format(bid=bid) + suffix for p in group.hf]
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ConversionError(f"the fused layout needs '{missing[0]}' too", tensor=name)
            pieces = [by_name[n] for n in names]
            if group.transposed and suffix == ".weight":
                pieces = [transpose(t) for t in pieces]
            whole = concat(names[0], pieces, 0)
            fused_names = [p.name.format(bid=bid) + suffix for p in group.fused]
            rows = row_counts(group.fused, whole.shape[0], cfg, names[0])
            replaced[names[0]] = split_rows(whole, fused_names, rows)
            consumed.update(names)
    out: list[OutTensor] = []
    for t in tensors:
        if t.name in replaced:
            out += replaced[t.name]
        elif t.name not in consumed:
            out.append(t)
    return out


def split_for_rank(t: OutTensor, rank: int, tp_size: int) -> OutTensor:
    rule = sharding(t.name)
    if rule.dim is None or tp_size == 1:
        return OutTensor(t.name, t.shape, t.dtype, t.parts, t.layout, list(t.ops), note="replicated" if tp_size > 1 else "")
    size = t.shape[rule.dim]
    if size % (rule.parts * tp_size):
        raise ConversionError(f"dim {rule.dim} ({size}) does not split into {rule.parts} × {tp_size} equal slices "
                              "for tensor parallelism", tensor=t.name)
    part, chunk = size // rule.parts, size // rule.parts // tp_size
    slices = [crop(t, rule.dim, p * part + rank * chunk, p * part + (rank + 1) * chunk) for p in range(rule.parts)]
    out = concat(t.name, slices, rule.dim) if len(slices) > 1 else slices[0]
    out.note = f"rank {rank}: {rule.describe}"
    return out


def plan_native(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    wanted = opts.native
    st.check_outtype(opts.common.outtype)
    if wanted.layout not in LAYOUTS:
        raise ConversionError(f"--layout {wanted.layout} is not one of {', '.join(LAYOUTS)}")
    if wanted.tp_size < 1:
        raise ConversionError("--tp-size must be 1 or more")
    if wanted.tp_size > 1 and wanted.layout != "fused":
        raise ConversionError("tensor-parallel slices are defined on the fused layout; pass --layout fused")
    ht = ck.trainer_tensors(registry.catalog(), opts.source.arch)
    assert ht.arch is not None
    if opts.hf.vocab_size is not None:
        resize_vocab(ht, opts.hf.vocab_size)
    tensors = ht.tensors
    if wanted.layout == "fused":
        tensors = fuse(tensors, ht.arch, Config(ht.config))
    for t in tensors:
        t.dtype = source_dtype(t.dtype, opts.common.outtype)
    step = wanted.step if wanted.step is not None else ck.training_step
    folder = step_folder(step)
    files = [OutFile(f"{folder}/{rank_file(r, wanted.tp_size)}", "safetensors", metadata={"format": "pt"})
             for r in range(wanted.tp_size)]
    planned: list[OutTensor] = []
    for r in range(wanted.tp_size):
        for t in tensors:
            piece = split_for_rank(t, r, wanted.tp_size)
            piece.file = r
            planned.append(piece)
    plan = Plan(files, planned)
    config: dict[str, Any] = dict(ht.config)
    config.setdefault("architectures", [ht.arch.hf_architectures[0]])
    config.setdefault("model_type", ht.arch.model_types[0])
    config[NATIVE_KEY] = {"format": FORMAT, "arch": ht.arch.name, "layout": wanted.layout, "tp_size": wanted.tp_size,
                          "step": step}
    tokenizer_source = Path(opts.source.tokenizer) if opts.source.tokenizer else ck.folder
    for name, data in tokenizer_files(tokenizer_source, None, config).items():
        plan.side_files[f"{folder}/{name}"] = data
    plan.side_files[LATEST] = f"{step}\n".encode()
    plan.side_files[f"{folder}/config.json"] = (json.dumps(config, indent=2) + "\n").encode()
    generation = ck.folder / "generation_config.json"
    if generation.is_file():
        plan.side_files[f"{folder}/generation_config.json"] = generation.read_bytes()
    plan.notes += ht.notes + [f"{ht.arch.name} → native step {step}, layout {wanted.layout}, {wanted.tp_size} rank(s)"]
    return plan
