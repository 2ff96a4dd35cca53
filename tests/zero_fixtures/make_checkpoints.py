"""Train tiny models with DeepSpeed on CPU and save real ZeRO checkpoints plus references.

Run with ``torchrun --nproc_per_node N`` (or, for one rank, with RANK/WORLD_SIZE/... set). Each
argument after ``--out`` is a JSON run description ``{"name", "stage", "dtype", "model", ...}``
(optional: "groups", "zero", "grad_accum_dtype", "sizes" for the transformers config, "steps",
"optimizer": "sgd" for one without states and "init_dtype": "bf16" to build the model in bf16, which
let a larger model fit in RAM, and "references": false to save only the checkpoint);
one process group trains them one after another, so the launch and DeepSpeed import are paid once.

For every run ``<out>/<name>/`` gets:
- ``ckpt/``: what ``engine.save_checkpoint`` wrote (``latest``, ``global_step3/``, ``zero_to_fp32.py``),
  plus ``config.json`` for transformers models
- ``module_state.safetensors``: the module's full state dict in its training dtype, gathered by
  DeepSpeed at stage 3, every name including tied aliases and persistent buffers
- ``master.safetensors``: the fp32 master copy of every trainable parameter, read from the live
  optimizer's memory (see ``master_from_flat_buffers``)
- ``zero_to_fp32.safetensors``: DeepSpeed's own ``get_fp32_state_dict_from_zero_checkpoint`` output,
  or its error in ``meta.json`` when it refuses the checkpoint
- ``meta.json``: names of trainable, frozen, tied and buffer tensors, and notes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

STEPS = 3
MICRO_BATCH = 2
SEQ = 8


class Toy(nn.Module):
    """Odd sizes, a head tied to the embedding, three frozen parameters, float and int64
    persistent buffers and a non-persistent one."""

    vocab = 37

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.vocab, 12)       # 444 elements
        self.proj = nn.Linear(12, 7)                    # 84 + a 7-element bias
        self.back = nn.Linear(7, 12)
        self.norm = nn.LayerNorm(12)
        self.mix = nn.Linear(12, 12)
        self.frozen = nn.Linear(12, 5)                  # frozen weight and 5-element bias
        self.frozen_scale = nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.out = nn.Linear(5, 12, bias=False)
        self.head = nn.Linear(12, self.vocab, bias=False)
        self.head.weight = self.embed.weight
        for p in (self.frozen.weight, self.frozen.bias, self.frozen_scale):
            p.requires_grad_(False)
        self.register_buffer("scale", torch.linspace(0.25, 1.0, 12))
        self.register_buffer("counts", torch.tensor([3, 1, 4, 1, 5], dtype=torch.int64))
        self.register_buffer("scratch", torch.zeros(4), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) * self.scale.to(self.embed.weight.dtype)
        h = self.back(F.gelu(self.proj(x)))
        h = self.norm(h + x)
        f = self.frozen(h) * self.frozen_scale.repeat(2)[:5]
        h = self.mix(h) + self.out(f)
        logits = self.head(h)
        return F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())


def build_model(kind: str, sizes: dict[str, Any]) -> tuple[nn.Module, int]:
    """The model and its vocabulary size. transformers models train unwrapped, as under HF's Trainer,
    so their state-dict names are the usual ones; ``sizes`` overrides their tiny config."""
    if kind == "toy":
        return Toy(), Toy.vocab
    if kind == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        gpt2 = GPT2Config(**{"vocab_size": 96, "n_positions": 32, "n_embd": 24, "n_layer": 2, "n_head": 4,
                             "tie_word_embeddings": True, **sizes})
        return GPT2LMHeadModel(gpt2), gpt2.vocab_size
    if kind == "neobert":  # the NeoBERT trainer's parameter names over the reference forward, decoder tied
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.neobert_fixtures import TrainerModel

        neobert = TrainerModel(**sizes)
        return neobert, neobert.shape.vocab
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        # 400 tokens: room for a byte-fallback SentencePiece vocabulary, so the GGUF test can run it in llama.cpp
        llama = LlamaConfig(**{"vocab_size": 400, "hidden_size": 32, "intermediate_size": 44, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
                               "tie_word_embeddings": False, **sizes})
        return LlamaForCausalLM(llama), llama.vocab_size
    raise SystemExit(f"unknown model {kind!r}")


def loss_of(engine: Any, ids: torch.Tensor) -> torch.Tensor:
    if not hasattr(engine.module, "config"):  # our own modules return their loss
        return engine(ids)  # type: ignore[no-any-return]
    return engine(input_ids=ids, labels=ids).loss  # type: ignore[no-any-return]


def param_groups(model: nn.Module, groups: int) -> list[dict[str, Any]]:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if groups == 1:
        return [{"params": [p for _n, p in trainable], "weight_decay": 0.01}]
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0, "lr": 5e-3}]


def ds_config(run: dict[str, Any]) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": run["stage"], **run.get("zero", {})}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    if run["dtype"] == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif run["dtype"] == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 8}
    if run.get("grad_accum_dtype"):
        cfg["data_types"] = {"grad_accum_dtype": run["grad_accum_dtype"]}
    return cfg


def gather_flat(part: torch.Tensor) -> torch.Tensor:
    """All ranks' equal-sized 1-D partitions, concatenated in rank order."""
    world = torch.distributed.get_world_size()
    pieces = [torch.empty_like(part) for _ in range(world)]
    torch.distributed.all_gather(pieces, part.contiguous())
    return torch.cat(pieces)


def master_from_flat_buffers(optimizer: Any, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """fp32 master weights at stages 1/2, read from where training itself keeps them.

    Each trainable parameter's low-precision data is a view into its group's flat buffer, and rank
    r's fp32 partition holds elements [r * size, (r + 1) * size) of that buffer's fp32 twin. So the
    parameter's offset in the flat buffer (from data pointers) locates its master values. Nothing
    here reads the checkpoint, ``param_shapes`` or ``param_slice_mappings``.
    """
    if hasattr(optimizer, "bf16_groups_flat"):  # BF16_Optimizer
        flats, parts, groups = optimizer.bf16_groups_flat, optimizer.fp32_groups_flat_partition, optimizer.bf16_groups
    else:
        flats, parts, groups = optimizer.bit16_groups_flat, optimizer.single_partition_of_fp32_groups, optimizer.bit16_groups
    out: dict[str, torch.Tensor] = {}
    for flat, part, params in zip(flats, parts, groups):
        full = gather_flat(part.detach().float())
        assert full.numel() == flat.numel(), (full.numel(), flat.numel())
        for p in params:
            start = (p.data.data_ptr() - flat.data_ptr()) // p.element_size()
            assert start >= 0 and start + p.numel() <= flat.numel()
            out[names[id(p)]] = full[start:start + p.numel()].view(p.shape).clone()
    return out


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared storage, and tied names share it
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path))


def train_and_save(run: dict[str, Any], out: Path) -> None:
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    rank = torch.distributed.get_rank()
    if run["dtype"] == "fp16":
        # DeepSpeed's CPU accelerator accepts fp16 only where oneDNN has fp16 kernels (AVX512-FP16/AMX);
        # torch computes fp16 on any CPU, so the run only needs the check to pass.
        from deepspeed.accelerator import get_accelerator

        get_accelerator().is_fp16_supported = lambda: True
    torch.manual_seed(1234)
    if run.get("init_dtype") == "bf16":
        torch.set_default_dtype(torch.bfloat16)
    model, vocab = build_model(run["model"], run.get("sizes", {}))
    torch.set_default_dtype(torch.float32)
    optimizer_class = torch.optim.SGD if run.get("optimizer") == "sgd" else torch.optim.AdamW
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, run.get("groups", 1)),
        optimizer=optimizer_class(param_groups(model, run.get("groups", 1)), lr=1e-2),
        config=ds_config(run),
    )
    gen = torch.Generator().manual_seed(99 + rank)
    for _ in range(run.get("steps", STEPS)):
        ids = torch.randint(0, vocab, (MICRO_BATCH, SEQ), generator=gen)
        loss = loss_of(engine, ids)
        engine.backward(loss)
        engine.step()
    folder = out / run["name"]
    ckpt = folder / "ckpt"
    engine.save_checkpoint(str(ckpt))
    if rank == 0 and hasattr(engine.module, "config"):  # where HF's Trainer puts it: beside 'latest'
        engine.module.config.to_json_file(str(ckpt / "config.json"))
    torch.distributed.barrier()
    if not run.get("references", True):  # benchmark data: the checkpoint is all that is needed
        engine.destroy()
        return

    module = engine.module
    names = {id(p): n for n, p in module.named_parameters()}
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    buffers = [n for n, _b in module.named_buffers() if n in module.state_dict()]
    tied = {}
    seen: dict[int, str] = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied[n] = seen[id(p)]
        else:
            seen[id(p)] = n
    notes: list[str] = []

    if run["stage"] == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        master = {n: safe_get_full_fp32_param(p).detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    else:
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        master = master_from_flat_buffers(optimizer, names)
        # DeepSpeed's own accessor; under round_robin_gradients its mapping is known to be wrong
        accessor = {n: safe_get_full_fp32_param(p) for n, p in module.named_parameters() if p.requires_grad}
        wrong = sorted(n for n, v in accessor.items() if not torch.equal(v.float(), master[n]))
        if wrong and not run.get("zero", {}).get("round_robin_gradients"):
            raise SystemExit(f"{run['name']}: safe_get_full_fp32_param disagrees with the flat buffers on {wrong}")
        if wrong:
            notes.append(f"safe_get_full_fp32_param is wrong for {len(wrong)} of {len(accessor)} parameters")

    if rank == 0:
        save_tensors(folder / "module_state.safetensors", state)
        save_tensors(folder / "master.safetensors", master)
        meta: dict[str, Any] = {"run": run, "trainable": trainable, "frozen": frozen, "buffers": buffers,
                                "tied": tied, "state_names": list(state), "notes": notes,
                                "world_size": torch.distributed.get_world_size()}
        try:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            reference = get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
            save_tensors(folder / "zero_to_fp32.safetensors", reference)
            meta["zero_to_fp32_error"] = None
        except Exception as e:  # recorded: the tests show where zero_to_fp32 fails
            meta["zero_to_fp32_error"] = f"{type(e).__name__}: {e}"
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    torch.distributed.barrier()
    engine.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("runs", nargs="+", help="JSON run descriptions")
    args = parser.parse_args()
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    try:
        for text in args.runs:
            train_and_save(json.loads(text), args.out)
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()
