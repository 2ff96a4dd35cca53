"""Save real PyTorch Distributed Checkpoints of a tiny Llama from 2 gloo ranks on CPU.

Run with ``torchrun --nproc_per_node 2 make_checkpoints.py OUT``. ``OUT`` gets ``config.json`` (beside
the checkpoints, where trainers keep it), ``logits.pt`` (the model's logits on ``IDS`` before it was
sharded) and four checkpoint folders:

- ``fsdp2/``: ``{"model", "optim"}`` of the model sharded with FSDP2 (``fully_shard`` over a CPU device
  mesh) after an AdamW step that leaves the weights as they were (lr 0), so the optimizer has state
- ``replicated/``: ``{"app": {"model", "optim"}}`` as DCP's tutorial saves it, every rank holding
  the whole model (DCP writes each tensor once)
- ``columns/``: ``{"model"}`` with every matrix a DTensor sharded along its columns (``Shard(1)``), as
  tensor parallelism leaves them: each chunk is a band of columns, not of rows
- ``plain/``: the bf16 state dict saved at the top level by rank 0 alone (``no_dist``)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard, distribute_tensor
from transformers import LlamaConfig, LlamaForCausalLM

IDS = [1, 17, 42, 99, 250, 3, 64, 128, 7, 399]
CONFIG = LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = LlamaForCausalLM(CONFIG)
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0]
    if rank == 0:
        model.config.save_pretrained(out)
        torch.save(logits, out / "logits.pt")
        dcp.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, checkpoint_id=out / "plain", no_dist=True)

    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    model(torch.tensor([IDS])).logits.sum().backward()
    opt.step()
    dcp.save({"app": {"model": model.state_dict(), "optim": opt.state_dict()}}, checkpoint_id=out / "replicated")

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    columns = {k: distribute_tensor(v.detach(), mesh, [Shard(1)]) if v.dim() == 2 else v for k, v in model.state_dict().items()}
    dcp.save({"model": columns}, checkpoint_id=out / "columns")

    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    model(torch.tensor([IDS])).logits.sum().backward()
    opt.step()
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=out / "fsdp2")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]))
