"""Options of a conversion, shared by the CLI and the Python API."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK_BYTES = 4 << 20  # engine work buffer per thread


@dataclass
class ConvertOptions:
    to: str | None = None                # target; None: from the output's suffix
    outtype: str | None = None           # None: every tensor keeps its type
    strip_prefixes: tuple[str, ...] = ()  # name prefixes removed from source tensors (e.g. "_orig_mod.", "module.")
    zero_weights: str = "master"         # ZeRO: "master" (fp32 optimizer copy) or "module" (training dtype, stages 1/2)
    threads: int = 0                     # 0: all CPUs
    max_shard_size: int | None = None    # bytes per safetensors shard
    dry_run: bool = False
    progress: bool = True
    force: bool = False                  # replace an existing output (only once the new one is complete)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    arch: str | None = None              # force an architecture table
    # GGUF
    tokenizer: str | None = None         # tokenizer.json / tokenizer.model to use instead of the one beside the weights
    tokenizer_pre: str | None = None     # name llama.cpp's BPE pre-tokenizer when the hash is unknown
    split_max_size: int | None = None    # bytes of tensor data per GGUF split
    split_max_tensors: int | None = None
    model_name: str | None = None        # general.name (default: the source folder's name)
    fingerprint: bool = True             # write <file>.sha256 and <stem>.meta.json beside GGUF output
    compress: str | None = None          # "zstd": also write <file>.zst (streamed, multi-threaded) beside a file output
    compress_only: bool = False          # keep only the .zst, not the file in it
    ternarize: str | None = None         # "absmean": ternarize the projections (default for ternary models)
    keep_float: tuple[str, ...] = ()     # regexes on GGUF or source names: these tensors stay float
    allow_requantize: bool = True        # a GGUF source may hold quantized tensors (``pyconv quantize``: no)
    # Hugging Face folders and trainer layouts
    include_pytorch_bin: bool = False    # also write pytorch_model.bin (torch zip, streamed)
    vocab_size: int | None = None        # pad (zero rows) or truncate embedding and output head to this
    layout: str = "fused"                # native: "fused" (trainer projections) or "hf" (HF's tensors)
    tp_size: int = 1                     # native: tensor-parallel ranks to split into
    step: int | None = None              # native: the step folder to write (default: the source's, else 0)
    allow_decoder_bias_drop: bool = False  # NeoBERT: drop a masked-LM decoder bias the HF model has no place for
