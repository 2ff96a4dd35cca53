"""Hugging Face folder output: safetensors (single or sharded with an index), optionally
``pytorch_model.bin``, config.json, generation_config.json, tokenizer files and a README model card.
A folder transformers loads with no missing, unexpected or mismatched keys and the source's logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import ConversionError
from ..family import HfExporter
from ..options import ConvertOptions
from ..plan import OutFile, OutTensor, Plan
from ..sources.checkpoint import Checkpoint
from . import safetensors as st
from . import torch_zip
from .hf_model import HfTensors
from .hf_tensors import resize_vocab, source_dtype
from .hf_tokenizer import TOKENIZER_FILES, tokenizer_files
from .model_card import render
from .sharding import assign_shards, shard_name

BIN_STEM = "pytorch_model"
CARD = "README.md"
TORCH_DTYPE_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64"}
CARD_OPTIONS = ("outtype", "max_shard_size", "include_pytorch_bin", "arch", "vocab_size", "strip_prefixes", "zero_weights",
                "allow_decoder_bias_drop")
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def _model_dtype(tensors: list[OutTensor]) -> str | None:
    counts: dict[str, int] = {}
    for t in tensors:
        if t.dtype in TORCH_DTYPE_NAMES:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
    return TORCH_DTYPE_NAMES[max(counts, key=lambda k: counts[k])] if counts else None


def _pytorch_bins(tensors: list[OutTensor], max_shard_size: int | None, first_file: int) -> tuple[list[OutFile], list[OutTensor], bytes | None]:
    """The same tensors again as torch zip file(s), sharded like the safetensors, with their index."""
    copies = [OutTensor(t.name, t.shape, t.dtype, t.parts, t.layout, list(t.ops), note=t.note) for t in tensors]
    shard_of = assign_shards([t.nbytes for t in copies], max_shard_size)
    count = (shard_of[-1] + 1) if shard_of else 1
    files = []
    for i in range(count):
        mine = [t for t, s in zip(copies, shard_of) if s == i]
        files.append(torch_zip.torch_zip_file(shard_name(BIN_STEM, i, count, ".bin"), mine, first_file + i))
    index = None
    if count > 1:
        index = _json({"metadata": {"total_size": sum(t.nbytes for t in copies)},
                       "weight_map": {t.name: files[t.file - first_file].name for t in copies}})
    return files, copies, index


def generation_config(ck: Checkpoint, config: dict[str, Any]) -> bytes | None:
    """The source's generation_config.json, else one with the config's special ids (causal models)."""
    source = ck.model_folder / "generation_config.json" if ck.model_folder is not None else None
    if source is not None and source.is_file():
        return source.read_bytes()
    ids = {k: config[k] for k in GENERATION_IDS if config.get(k) is not None}
    arch = (config.get("architectures") or [""])[0]
    return _json({"_from_model_config": True, **ids}) if ids and arch.endswith(("ForCausalLM", "LMHeadModel")) else None


def sentence_transformers_files(folder: Path) -> dict[str, bytes]:
    """A sentence-transformers folder's own files (modules.json and each module's config), so the export
    still embeds sentences the way the source did."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return {}
    files = {name: (folder / name).read_bytes() for name in ST_FILES if (folder / name).is_file()}
    for module in json.loads(modules.read_text(encoding="utf-8")):
        path = str(module.get("path", ""))
        if path and (folder / path / "config.json").is_file() and ".." not in Path(path).parts:
            files[f"{path}/config.json"] = (folder / path / "config.json").read_bytes()
    return files


def exported(exporter: HfExporter, ck: Checkpoint, opts: ConvertOptions) -> HfTensors:
    """The export of a family's own checkpoint, its modeling code included."""
    ht = exporter.tensors(ck, opts)
    ht.files.update({path.name: path.read_bytes() for path in exporter.remote_code})
    return ht


def plan_hf(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    outtype, max_shard_size = opts.common.outtype, opts.common.max_shard_size
    st.check_outtype(outtype)
    if out.suffix in (".safetensors", ".gguf", ".bin"):
        raise ConversionError("--to hf writes a folder; name one without a file suffix", file=out)
    exporter = registry.hf_exporter(ck)
    ht = exported(exporter, ck, opts) if exporter else ck.hf_tensors(registry.catalog(), opts.source.arch)
    if opts.hf.vocab_size is not None:
        resize_vocab(ht, opts.hf.vocab_size)
    for t in ht.tensors:
        t.dtype = source_dtype(t.dtype, outtype)
    plan = st.place_in_files(ht.tensors, stem=st.WEIGHTS_STEM, max_shard_size=max_shard_size, metadata={})
    if opts.hf.include_pytorch_bin:
        files, copies, index = _pytorch_bins(ht.tensors, max_shard_size, len(plan.files))
        plan.files += files
        plan.tensors += copies
        if index is not None:
            plan.side_files[f"{BIN_STEM}.bin.index.json"] = index
    config = ht.config
    config.pop("torch_dtype", None)
    dtype = _model_dtype(ht.tensors)
    if dtype:
        config["dtype"] = dtype
    tokenizer = ht.tokenizer
    if tokenizer is None:
        chosen = opts.source.tokenizer
        tokenizer = tokenizer_files(Path(chosen) if chosen else ck.folder, None if chosen else ck.embedded_tokenizer, config)
    plan.side_files.update(tokenizer)
    plan.side_files.update(ht.files)
    if ck.model_folder is not None:
        plan.side_files.update(sentence_transformers_files(ck.model_folder))
    plan.side_files["config.json"] = _json(config)
    generation = generation_config(ck, config)
    if generation is not None:
        plan.side_files["generation_config.json"] = generation
    if opts.common.fingerprint:
        plan.late_files = [CARD]
    else:
        plan.side_files[CARD] = card(plan, ck, opts, None, None).encode()
    plan.notes += ht.notes
    return plan


def card(plan: Plan, ck: Checkpoint, opts: ConvertOptions, fingerprints: dict[str, str] | None,
         source_hashes: dict[Path, str] | None) -> str:
    defaults = ConvertOptions().flat()
    options = {k: v for k, v in opts.flat().items() if v != defaults[k] and k in CARD_OPTIONS}
    weights = [t for t in plan.tensors if plan.files[t.file].container == "safetensors"]
    config = json.loads(plan.side_files["config.json"])
    exporter = registry.hf_exporter_of(config.get("model_type"))
    return render(config=config, tensors=weights, source=ck.path, source_kind=ck.format_name,
                  options=options, fingerprints=fingerprints,
                  source_hashes={p.name: h for p, h in source_hashes.items()} if source_hashes else None,
                  has_tokenizer=any(n in plan.side_files for n in TOKENIZER_FILES),
                  usage=exporter.usage(config, plan.side_files) if exporter else None)


def seal_hf(plan: Plan, written: list[Path]) -> list[Path]:
    """CRC-32s of the torch zip files, known only once the engine wrote their members."""
    sealed = [path for f, path in zip(plan.files, written) if f.container == "raw"]
    for path in sealed:
        torch_zip.seal(path)
    return sealed


def finish_hf(plan: Plan, written: list[Path], ck: Checkpoint, opts: ConvertOptions,
              source_hashes: dict[Path, str], output_hashes: dict[Path, str]) -> dict[str, bytes]:
    """The model card, with the sha256 of every weight file written."""
    fingerprints = {f.name: output_hashes[path] for f, path in zip(plan.files, written)}
    return {CARD: card(plan, ck, opts, fingerprints, source_hashes).encode()}
