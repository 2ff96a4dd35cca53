"""Options of a conversion, shared by the CLI and the Python API."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK_BYTES = 4 << 20  # engine work buffer per thread


@dataclass
class ConvertOptions:
    to: str | None = None                # target; None: from the output's suffix
    outtype: str | None = None           # None: every tensor keeps its type
    threads: int = 0                     # 0: all CPUs
    max_shard_size: int | None = None    # bytes per safetensors shard
    dry_run: bool = False
    progress: bool = True
    force: bool = False                  # replace an existing output (only once the new one is complete)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
