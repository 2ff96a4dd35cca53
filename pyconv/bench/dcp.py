"""The DCP benchmark's checkpoint and its reference conversion.

``python -m torch.distributed.run --nproc_per_node=2 -m pyconv.bench.dcp save SRC OUT`` saves the
synthetic safetensors checkpoint ``SRC`` as a PyTorch Distributed Checkpoint ``{"model": ...}`` from 2
gloo ranks, every tensor a DTensor sharded by rows (as FSDP2 leaves parameters): each rank reads only
its rows of each tensor, so neither holds the model. ``python -m pyconv.bench.dcp to-torch-save CKPT
OUT`` is torch's own ``dcp_to_torch_save`` followed by the model's state written as safetensors, the
way a user gets from a DCP checkpoint to a file transformers loads today.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

GLOO_RANKS = 2


def save(src: Path, out: Path) -> None:
    import torch
    import torch.distributed as dist
    from safetensors import safe_open
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    state = {}
    for name, shard in index.items():
        with safe_open(src / shard, framework="pt") as f:
            rows = f.get_slice(name)
            shape = rows.get_shape()
            n = shape[0]
            per_rank = -(-n // world)  # torch.chunk's split, as FSDP2's Shard(0)
            local = rows[rank * per_rank:min(n, (rank + 1) * per_rank)]
        state[name] = DTensor.from_local(local.contiguous(), mesh, [Shard(0)], run_check=False, shape=torch.Size(shape),
                                         stride=tuple(math.prod(shape[d + 1:]) for d in range(len(shape))))
    dcp_save({"model": state}, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def to_torch_save(ckpt: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(ckpt, out / "full.pt")
    model = torch.load(out / "full.pt", weights_only=True)["model"]
    save_file(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "full.pt").unlink()


def ensure_dcp(src: Path, root: Path) -> Path:
    """The DCP checkpoint of the synthetic checkpoint ``src``, saved by 2 ranks on first use."""
    folder = root / f"{src.name}-dcp"
    done = folder / ".complete"
    stamp = (src / ".complete").read_text()
    if done.is_file() and done.read_text() == stamp:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    print(f"saving {folder.name} from {GLOO_RANKS} gloo ranks...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={GLOO_RANKS}", "--master_port=29518",
           "-m", "pyconv.bench.dcp", "save", str(src), str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    done.write_text(stamp)
    return folder


if __name__ == "__main__":
    {"save": save, "to-torch-save": to_torch_save}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
