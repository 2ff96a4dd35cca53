"""llama.cpp's LoRA adapter GGUF, as its convert_lora_to_gguf.py writes it: ``general.type`` adapter,
``adapter.type`` lora, ``adapter.lora.alpha``, and for each adapted weight of the base a pair
``<GGUF name>.lora_a`` [r, in] and ``<GGUF name>.lora_b`` [out, r]. Where the base's GGUF permutes a
weight's rows (Q and K for the rotary embedding), B's rows are permuted the same way: B @ A then has
the permuted weight's row order, and A, which acts on the input, stays as it is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf

from ..archs.catalog import Catalog
from ..archs.config import Config
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import OutTensor, Part, Plan, View
from ..sources.base import SourceTensor
from ..sources.checkpoint import Checkpoint
from .gguf import (
    GgufMapper,
    TypeRules,
    check_outtype,
    kv_tuples,
    place,
    rope_permuted,
    tensor_type,
)


def plan_adapter_gguf(ck: Checkpoint, pairs: Mapping[str, tuple[SourceTensor, SourceTensor]], alpha: float, out: Path,
                      opts: ConvertOptions, catalog: Catalog) -> Plan:
    """The adapter GGUF of ``pairs`` (A, B by the base weight's HF name); ``ck.config`` is the base's."""
    check_outtype(opts.common.outtype)
    assert ck.config is not None
    cfg = Config(ck.config, ck.folder)
    arch = catalog.detect(cfg, list(pairs), opts.source.arch)
    rules = TypeRules.of(opts, arch.name, None)
    mapper = GgufMapper(ck, arch, cfg)
    tensors: list[OutTensor] = []
    for hf, (a, b) in pairs.items():
        kind, name, heads = mapper.one_to_one(hf)
        for suffix, t in ((".lora_a", a), (".lora_b", b)):
            view = View.of(t)
            layout = view.shape
            if heads is not None and suffix == ".lora_b":
                view, layout = rope_permuted(view, heads)
            dtype, why, ops = tensor_type(rules, t.dtype, kind, name, t.shape, t.name)
            if ops:
                raise ConversionError("a LoRA adapter cannot be ternarized", tensor=t.name)
            tensors.append(OutTensor(name + suffix, t.shape, dtype, [Part(view, (0,) * len(layout))], layout, note=why))
    graph = arch.gguf.name_for(opts.common.outtype)
    w = gguf.GGUFWriter(None, graph)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(opts.gguf.model_name or ck.path.name)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    files = place(tensors, kv_tuples(w.kv_data[0]), out.stem if out.suffix == ".gguf" else out.name, opts)
    plan = Plan(files, tensors, architecture=arch.name)
    plan.late_files = [f"{f.name}.sha256" for f in files] + [f"{out.stem}.meta.json"]
    plan.notes.append(f"LoRA adapter of {len(pairs)} weights for a {arch.name} base → GGUF '{graph}' adapter")
    return plan
