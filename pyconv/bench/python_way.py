"""The usual Python way to cast a sharded checkpoint: load each shard, cast with torch, save it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main(src: Path, out: Path, dtype: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, dtype)
    for shard in sorted(src.glob("*.safetensors")):
        tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in load_file(shard).items()}
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})
        del tensors
    shutil.copy(src / "model.safetensors.index.json", out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
