"""Options of a conversion, shared by the CLI and the Python API.

One dataclass per part of the job (what every conversion takes, how the source is read, each target's
own settings); ``ConvertOptions`` holds one of each. Every field carries in its metadata the flags that
set it on the command line, so the CLI builds its arguments and the options from these classes alone,
and ``ConvertOptions.of`` takes the flat keyword names of ``pyconv.convert`` (``outtype="q8_0"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from .errors import ConversionError
from .units import parse_size

DEFAULT_CHUNK_BYTES = 4 << 20  # engine work buffer per thread
COMPRESSION_FORMATS = ("zstd",)
# the field metadata key holding a field's flags
FLAGS = "pyconv_flags"
CONVERT, QUANTIZE = "convert", "quantize"
BOTH = (CONVERT, QUANTIZE)
# the help sections of ``pyconv convert`` beside its own arguments
HF_GROUP = "Hugging Face folders and trainer checkpoints (--to hf, --to native)"
GGUF_GROUP = "GGUF output"
COMPRESS_GROUP = "compressed artifacts"


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ConversionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def threads_arg(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("threads must be 0 (all CPUs) or more")
    return n


@dataclass(frozen=True)
class Flag:
    """How the ``commands`` spell a field: argparse's option names and keywords (help, type, action, ...).
    ``group`` is the title of the help section it goes in when not its part's."""

    names: tuple[str, ...]
    settings: Mapping[str, Any]
    commands: tuple[str, ...] = (CONVERT,)
    group: str | None = None


def flag(*names: str, commands: tuple[str, ...] = (CONVERT,), group: str | None = None, **settings: Any) -> Flag:
    return Flag(names, settings, commands, group)


def option(default: Any, *flags: Flag) -> Any:
    """A dataclass field defaulting to ``default``, set on the command line by ``flags``."""
    return field(default=default, metadata={FLAGS: flags})


@dataclass
class CommonOptions:
    """What every conversion takes."""

    to: str | None = option(None, flag("--to", help="output format: safetensors, gguf, hf, native (default: from OUT's suffix)"))
    outtype: str | None = option(  # None: every tensor keeps its type
        None,
        flag("--outtype", type=str.lower, help="output type: f32, f16, bf16; for GGUF also q8_0, q4_0, q4_1, q5_0, q5_1, "
                                               "q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, tq1_0, tq2_0, i2_s, and llama-quantize's "
                                               "file types q2_k_s, q3_k_s/m/l, q4_k_s/m, q5_k_s/m (default: keep)"),
        flag("--outtype", type=str.lower, required=True, commands=(QUANTIZE,),
             help="q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, tq1_0, tq2_0, i2_s, "
                  "q2_k_s, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, or f32, f16, bf16"))
    threads: int = option(0, flag("--threads", type=threads_arg, help="worker threads (default: all CPUs)", commands=BOTH))
    max_shard_size: int | None = option(  # bytes per safetensors shard
        None, flag("--max-shard-size", type=size_arg, metavar="SIZE", help="split safetensors output into shards of at most SIZE (e.g. 5GB)"))
    dry_run: bool = option(False, flag("--dry-run", action="store_true", help="print the plan and check disk space; write nothing",
                                       commands=BOTH))
    # replace an existing output (only once the new one is complete)
    force: bool = option(False, flag("--force", action="store_true", help="replace an existing output once the new one is complete",
                                     commands=BOTH))
    chunk_bytes: int = option(DEFAULT_CHUNK_BYTES, flag("--chunk-size", type=size_arg, metavar="SIZE",
                                                        help="engine work buffer per thread (default 4MiB)"))
    progress: bool = option(True, flag("-q", "--quiet", action="store_false", help="no progress bar, no summary", commands=BOTH))
    # write <file>.sha256 and <stem>.meta.json beside GGUF output, and the files' sha256 in an HF folder's card
    fingerprint: bool = option(True, flag("--no-fingerprint", action="store_false", help="skip the .sha256 and .meta.json sidecars",
                                          group=GGUF_GROUP))
    # the inputs' sha256 too: reading every input byte once more costs more CPU than the conversion
    hash_inputs: bool = option(False, flag("--hash-inputs", action="store_true", commands=BOTH,
                                           help="also record the sha256 of every input file in .meta.json (or the model card); "
                                                "reads the inputs once more"))


@dataclass
class SourceOptions:
    """How the source checkpoint is read."""

    strip_prefixes: tuple[str, ...] = option(  # name prefixes removed from source tensors (e.g. "_orig_mod.", "module.")
        (), flag("--strip-prefix", action="append", metavar="PREFIX",
                 help="remove PREFIX from the start of source tensor names (repeatable; e.g. _orig_mod. module.)"))
    zero_weights: str = option(  # ZeRO: "master" (fp32 optimizer copy) or "module" (training dtype, stages 1/2)
        "master", flag("--zero-weights", choices=("master", "module"),
                       help="DeepSpeed ZeRO: fp32 master weights from the optimizer states (default), or the module's "
                            "training-dtype copy (stages 1/2)"))
    dcp_key: str | None = option(  # DCP: the dotted key of the model's state dict (None: model, app.model, else the top level)
        None, flag("--dcp-key", metavar="KEY",
                   help="PyTorch Distributed Checkpoint: the dotted key holding the model's state (default: 'model', "
                        "'app.model', else the top level)"))
    # the reader to use, by its name, when a folder holds more than one kind of checkpoint
    source_format: str | None = option(None, flag("--source", metavar="FORMAT",
                                                  help="read the folder as this source format (zero, safetensors, dcp, torch, native, "
                                                       "gguf, neobert, or a plugin's) when it holds more than one"))
    arch: str | None = option(None, flag("--arch", help="force an architecture table instead of detecting it from config.json"))
    # a PEFT LoRA adapter's base model folder (its config.json), when adapter_config.json does not name a local one
    base: str | None = option(None, flag("--base", metavar="BASE_DIR",
                                         help="LoRA adapter: the base model's folder, for its config.json (default: "
                                              "the adapter's base_model_name_or_path when that is a local folder)"))
    # PEFT LoRA adapters merged into the weights as they are converted, each "ADAPTER_DIR" or "ADAPTER_DIR:SCALE"
    merge_lora: tuple[str, ...] = option((), flag("--merge-lora", action="append", metavar="ADAPTER_DIR[:SCALE]",
                                                  help="merge a PEFT LoRA adapter into the weights, W + SCALE * alpha/r * "
                                                       "B @ A, computed by the engine (repeatable; SCALE default 1)"))
    # tokenizer.json / tokenizer.model to use instead of the one beside the weights
    tokenizer: str | None = option(None, flag("--tokenizer", metavar="FILE", group=GGUF_GROUP,
                                              help="tokenizer.json or tokenizer.model to embed (default: beside the weights)"))


@dataclass
class HfOptions:
    """Hugging Face folders (and, for the vocabulary, trainer checkpoints)."""

    include_pytorch_bin: bool = option(False, flag("--include-pytorch-bin", action="store_true",
                                                   help="also write pytorch_model.bin (torch.load-able)"))
    # NeoBERT: drop a masked-LM decoder bias the HF model has no place for
    allow_decoder_bias_drop: bool = option(False, flag("--allow-decoder-bias-drop", action="store_true",
                                                       help="NeoBERT: drop a masked-LM decoder bias (the change to the logits is reported)"))
    vocab_size: int | None = option(None, flag("--vocab-size", type=int, metavar="N",
                                               help="pad (zero rows) or truncate embedding and output head to N"))


@dataclass
class NativeOptions:
    """Trainer checkpoints (``--to native``)."""

    layout: str = option("fused", flag("--layout", choices=("fused", "hf"),
                                       help="native: fused trainer projections (kv, gate_up; GPT-2 as [out, in]) or HF's own tensors"))
    tp_size: int = option(1, flag("--tp-size", type=int, metavar="N", help="native: split into N tensor-parallel rank files"))
    step: int | None = option(None, flag("--step", type=int, metavar="N",  # None: the source's, else 0
                                         help="native: the step folder to write (default: the source's, else 0)"))


@dataclass
class GgufOptions:
    """GGUF files for llama.cpp."""

    tokenizer_pre: str | None = option(  # names llama.cpp's BPE pre-tokenizer when its hash is unknown
        None, flag("--tokenizer-pre", metavar="NAME", help="llama.cpp pre-tokenizer name, when pyconv cannot recognise it"))
    split_max_size: int | None = option(  # bytes of tensor data per GGUF split
        None, flag("--split-max-size", type=size_arg, metavar="SIZE",
                   help="split into llama.cpp gguf-split shards of at most SIZE tensor bytes"))
    split_max_tensors: int | None = option(None, flag("--split-max-tensors", type=int, metavar="N",
                                                      help="split into shards of at most N tensors"))
    model_name: str | None = option(None, flag("--name", help="general.name (default: the source folder's name)"))


@dataclass
class QuantOptions:
    """How GGUF types are chosen beyond the out type: ternarization, tensors kept float, requantizing."""

    ternarize: str | None = option(  # "absmean": ternarize the projections (default for ternary models)
        None, flag("--ternarize", choices=("absmean",), commands=BOTH,
                   help="ternarize the 7 projections as BitNet's forward pass does (default for BitNet models; needed by "
                        "other models for tq1_0, tq2_0, i2_s)"))
    keep_float: tuple[str, ...] = option(  # regexes on GGUF or source names: these tensors stay float
        (), flag("--keep-float", action="append", metavar="PATTERN", commands=BOTH,
                 help="keep tensors whose GGUF or source name matches this regex float (repeatable)"))
    # llama-quantize's options, spelled as it spells them (they need one of its file types as --outtype)
    pure: bool = option(False, flag("--pure", action="store_true", commands=BOTH,
                                    help="with a llama-quantize file type: every tensor its default type (no per-tensor rules)"))
    output_tensor_type: str | None = option(None, flag("--output-tensor-type", type=str.lower, metavar="TYPE", commands=BOTH,
                                                       help="type of output.weight"))
    token_embedding_type: str | None = option(None, flag("--token-embedding-type", type=str.lower, metavar="TYPE",
                                                         commands=BOTH, help="type of token_embd.weight"))
    tensor_types: tuple[str, ...] = option(  # PATTERN=TYPE: GGUF names matching the regex get TYPE (first match wins)
        (), flag("--tensor-type", action="append", metavar="PATTERN=TYPE", commands=BOTH,
                 help="tensors whose GGUF name matches the regex PATTERN get TYPE (repeatable; the first match wins)"))
    leave_output_tensor: bool = option(False, flag("--leave-output-tensor", action="store_true", commands=BOTH,
                                                   help="keep output.weight in its source type"))
    imatrix: str | None = option(None, flag("--imatrix", metavar="FILE", commands=BOTH,
                                            help="importance matrix from llama-imatrix (GGUF or legacy .dat) to weigh rounding by"))
    # a GGUF source may hold quantized tensors (``pyconv quantize``: not unless asked)
    allow_requantize: bool = option(True, flag("--allow-requantize", action="store_true", commands=(QUANTIZE,),
                                               help="accept a source that already holds quantized tensors"))


@dataclass
class CompressOptions:
    """Compressed artifacts beside a file output."""

    compress: str | None = option(  # "zstd": also write <file>.zst (streamed, multi-threaded) beside a file output
        None, flag("--compress", choices=COMPRESSION_FORMATS, commands=BOTH,
                   help="also write <file>.zst beside a file output (zstd, streamed, multi-threaded, reproducible) with its "
                        "own .sha256; .zst inputs are read as well"))
    compress_only: bool = option(False, flag("--compress-only", action="store_true", commands=BOTH,
                                             help="with --compress: keep only the .zst, not the file in it"))


@dataclass
class ConvertOptions:
    common: CommonOptions = field(default_factory=CommonOptions)
    source: SourceOptions = field(default_factory=SourceOptions)
    hf: HfOptions = field(default_factory=HfOptions)
    native: NativeOptions = field(default_factory=NativeOptions)
    gguf: GgufOptions = field(default_factory=GgufOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)
    compression: CompressOptions = field(default_factory=CompressOptions)

    @classmethod
    def of(cls, **values: Any) -> ConvertOptions:
        """Options from ``pyconv.convert``'s flat keyword names, each given to the part that has it."""
        parts: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            part = PART_OF.get(name)
            if part is None:
                raise TypeError(f"convert() got an unexpected keyword argument {name!r}")
            parts.setdefault(part, {})[name] = value
        return cls(**{part: type_(**parts.get(part, {})) for part, type_ in PARTS.items()})

    def flat(self) -> dict[str, Any]:
        """Every option under its flat name, part after part."""
        return {f.name: getattr(getattr(self, part), f.name) for part, type_ in PARTS.items() for f in fields(type_)}


# each part's attribute in ConvertOptions and its class, and the part of each flat name
PARTS: dict[str, type[Any]] = get_type_hints(ConvertOptions)
PART_OF: dict[str, str] = {f.name: part for part, type_ in PARTS.items() for f in fields(type_)}
