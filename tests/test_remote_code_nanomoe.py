"""nanoMoE remote code: exported folders load cleanly on transformers 5 and compute what the trainer computes.

Folders are written by hand from trainer-layout state dicts (random, seeded); fresh processes load them and
their outputs are compared with ``tests/reference/nanomoe.py``, a forward pass written from the spec with its
own per-token routing loop, never with pyconv's modeling code.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

from pyconv.families.nanomoe.remote_code.configuration_nanomoe_gpt import GPTConfig

from .reference.hf_folder import assert_clean_load, job, remote_code, run_probe, write_export
from .reference.nanomoe import NanoMoEShape, forward, greedy, next_token_loss, trainer_state_dict

# layers 1 and 3 are MoE (i >= 1 and (i + 1) % 2 == 0), 0 and 2 dense; SwiGLU experts
MIXED = NanoMoEShape(vocab=80, seq_len=32, layers=4, heads=4, embd=32, n_exp=4, top_k=2, stride=2, moe_start=1)
# capacity floor(2 * 0.5 * 24 / 4) = 6 places per expert for 24 tokens * 2 choices: overflow is certain
TIGHT = replace(MIXED, qwen3=False, eval_capacity=0.5, min_capacity=2)
DENSE = replace(MIXED, n_exp=1)
NOISY = replace(MIXED, noisy=True)
VARIANTS = {"mixed": (MIXED, 1), "tight": (TIGHT, 2), "dense": (DENSE, 3), "noisy": (NOISY, 4)}
TOL = {"rtol": 1e-4, "atol": 1e-5}
AUTO_MAP = {"AutoConfig": "configuration_nanomoe_gpt.GPTConfig", "AutoModelForCausalLM": "modeling_nanomoe_gpt.GPT"}


def hf_config(shape: NanoMoEShape, **extra: Any) -> GPTConfig:
    return GPTConfig(
        sequence_len=shape.seq_len, vocab_size=shape.vocab, n_layer=shape.layers, n_head=shape.heads,
        n_embd=shape.embd, n_exp=shape.n_exp, moe_top_k=shape.top_k, stride=shape.stride,
        moe_start_layer=shape.moe_start, use_qwen3_moe_mlp=shape.qwen3, use_noisy_top_k=shape.noisy,
        train_capacity=shape.train_capacity, eval_capacity=shape.eval_capacity, min_capacity=shape.min_capacity,
        aux_loss_weight=shape.aux_weight, router_z_loss_weight=shape.z_weight,
        architectures=["GPT"], **extra,
    )


def export(root: Path, name: str, shape: NanoMoEShape, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = trainer_state_dict(shape, seed)
    # a tied trainer state dict holds the matrix under both names; safetensors wants two separate tensors
    tensors = {k: v.clone() for k, v in sd.items()}
    return write_export(root / name, "nanomoe", hf_config(shape, tie_word_embeddings=True), tensors), sd


class Exports:
    """The folders, their trainer weights, and everything the probes recorded about them."""

    def __init__(self, root: Path) -> None:
        self.dirs: dict[str, Path] = {}
        self.sds: dict[str, dict[str, torch.Tensor]] = {}
        for name, (shape, seed) in VARIANTS.items():
            self.dirs[name], self.sds[name] = export(root, name, shape, seed)
        self.resaved_dir = root / "resaved"
        gen = torch.Generator().manual_seed(5)
        self.ids = torch.randint(0, MIXED.vocab, (2, 12), generator=gen)
        self.prompt = torch.randint(0, MIXED.vocab, (1, 6), generator=gen)
        self.new_tokens = 8

        def call(name: str, **kwargs: Any) -> dict[str, Any]:
            options = {k: kwargs.pop(k) for k in ("train", "seed", "raises", "method") if k in kwargs}
            return {"name": name, "kwargs": kwargs, **options}

        def load(name: str, calls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            folder = extra.pop("folder", self.dirs.get(name))
            return {"name": name, "kind": "load", "auto": "AutoModelForCausalLM", "dir": str(folder), "calls": calls,
                    **extra}

        scored = call("eval", input_ids=self.ids, labels=self.ids)
        trained = call("train", train=True, input_ids=self.ids, labels=self.ids, return_dict=False)
        mixed_calls = [
            scored,
            call("tuple", input_ids=self.ids, labels=self.ids, return_dict=False),
            trained,
            call("generate", method="generate", input_ids=self.prompt, attention_mask=torch.ones_like(self.prompt),
                 max_new_tokens=self.new_tokens, do_sample=False),
            call("padded", raises=True, input_ids=self.ids,
                 attention_mask=torch.tensor([[1] * 12, [1] * 8 + [0] * 4])),
            call("too_long", raises=True, input_ids=torch.zeros(1, MIXED.seq_len + 1, dtype=torch.long)),
        ]
        self.results = run_probe(
            [
                # first, so that no trust_remote_code load in this process has registered the classes before it
                {"name": "local", "kind": "local_import", "dir": str(self.dirs["mixed"]),
                 "module": "modeling_nanomoe_gpt", "calls": [scored]},
                load("mixed", mixed_calls, save_to=str(self.resaved_dir)),
                load("tight", [scored]),
                load("dense", [scored, call("resize", method="resize", new_num_tokens=DENSE.vocab + 8),
                               call("resized", input_ids=self.ids)]),
                load("noisy", [scored, {**trained, "seed": 7}]),
                {"name": "fresh", "kind": "fresh", "auto": "AutoModelForCausalLM", "dir": str(self.dirs["mixed"])},
            ],
            root,
        )
        # a second fresh process with its own module cache: the re-saved folder must carry its code itself
        second = root / "second-process"
        second.mkdir()
        self.results |= run_probe([load("resaved", [scored], folder=self.resaved_dir)], second)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("nanomoe-exports"))


@pytest.mark.parametrize("name", ["mixed", "resaved", "tight", "dense", "noisy"])
def test_folder_loads_without_missing_unexpected_or_warnings(exports: Exports, name: str) -> None:
    entry = job(exports.results, name)
    assert_clean_load(entry)
    assert entry["class"] == "GPT" and entry["training"] is False
    assert entry["shared"] == [["lm_head.weight", "transformer.wte.weight"]]


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_and_loss_match_training_forward(exports: Exports, name: str) -> None:
    out = job(exports.results, name)["outputs"]["eval"]
    logits, _ = forward(exports.sds[name], VARIANTS[name][0], exports.ids)
    torch.testing.assert_close(out["logits"], logits, **TOL)
    # eval mode: the router losses are training-only, so the loss is next-token cross-entropy alone
    torch.testing.assert_close(out["loss"], next_token_loss(logits, exports.ids), **TOL)


def test_capacity_overflow_drops_the_same_choices(exports: Exports) -> None:
    logits, records = forward(exports.sds["tight"], TIGHT, exports.ids)
    assert all(record.dropped > 0 for record in records)
    roomy, roomy_records = forward(exports.sds["tight"], replace(TIGHT, eval_capacity=3.0), exports.ids)
    assert all(record.dropped == 0 for record in roomy_records)
    got = job(exports.results, "tight")["outputs"]["eval"]["logits"]
    torch.testing.assert_close(got, logits, **TOL)
    assert (got - roomy).abs().max() > 0.1


def test_tuple_output_is_logits_loss_losses(exports: Exports) -> None:
    outputs = job(exports.results, "mixed")["outputs"]
    logits, loss, losses = outputs["tuple"]
    assert torch.equal(logits, outputs["eval"]["logits"]) and torch.equal(loss, outputs["eval"]["loss"])
    assert set(losses) == {"ntp_loss", "aux_loss", "router_z_loss"}
    assert torch.equal(losses["ntp_loss"], loss) and losses["aux_loss"] is None and losses["router_z_loss"] is None


@pytest.mark.parametrize(("name", "shape", "seed"), [("mixed", MIXED, None), ("noisy", NOISY, 7)])
def test_training_loss_adds_router_losses(exports: Exports, name: str, shape: NanoMoEShape, seed: int | None) -> None:
    """Train mode: train capacity, noisy gates when configured, and the balance and z losses in the loss."""
    logits, loss, losses = job(exports.results, name)["outputs"]["train"]
    with torch.random.fork_rng():
        # the probe seeded torch's generator the same way before its call, so the router noise matches
        if seed is not None:
            torch.manual_seed(seed)
        want, records = forward(exports.sds[name], shape, exports.ids, training=True)
    torch.testing.assert_close(logits, want, **TOL)
    aux = torch.stack([r.aux_loss for r in records]).sum()
    z = torch.stack([r.z_loss for r in records]).sum()
    ntp = next_token_loss(want, exports.ids)
    torch.testing.assert_close(losses["aux_loss"], aux, **TOL)
    torch.testing.assert_close(losses["router_z_loss"], z, **TOL)
    torch.testing.assert_close(losses["ntp_loss"], ntp, **TOL)
    torch.testing.assert_close(loss, ntp + shape.aux_weight * aux + shape.z_weight * z, **TOL)


def test_noise_only_moves_training_logits(exports: Exports) -> None:
    outputs = job(exports.results, "noisy")["outputs"]
    quiet, _ = forward(exports.sds["noisy"], replace(NOISY, noisy=False), exports.ids, training=True)
    assert (outputs["train"][0] - quiet).abs().max() > 1e-3


def test_generate_is_greedy_decoding(exports: Exports) -> None:
    got = job(exports.results, "mixed")["outputs"]["generate"]
    assert torch.equal(got, greedy(exports.sds["mixed"], MIXED, exports.prompt, exports.new_tokens))


def test_save_pretrained_round_trips(exports: Exports) -> None:
    got = job(exports.results, "resaved")["outputs"]["eval"]["logits"]
    assert torch.equal(got, job(exports.results, "mixed")["outputs"]["eval"]["logits"])
    assert {p.name for p in remote_code("nanomoe")} <= {p.name for p in exports.resaved_dir.iterdir()}
    saved = json.loads((exports.resaved_dir / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP and saved["moe_top_k"] == 2 and "top_k" not in saved


def test_importing_the_module_registers_it_for_local_use(exports: Exports) -> None:
    entry = job(exports.results, "local")
    # loaded without trust_remote_code: the class is the one imported by file name from the folder
    assert entry["imported_module"] == "modeling_nanomoe_gpt" and entry["class_module"] == "modeling_nanomoe_gpt"
    want = job(exports.results, "mixed")["outputs"]["eval"]["logits"]
    assert torch.equal(entry["outputs"]["eval"]["logits"], want)


def test_resizing_the_vocabulary_keeps_the_head_tied(exports: Exports) -> None:
    outputs = job(exports.results, "dense")["outputs"]
    resize = outputs["resize"]
    assert resize["vocab_size"] == DENSE.vocab + 8
    assert resize["shapes"]["transformer.wte.weight"] == (DENSE.vocab + 8, DENSE.embd)
    assert resize["shared"] == [["lm_head.weight", "transformer.wte.weight"]]
    # old tokens keep their logits; the new rows only add columns
    assert torch.equal(outputs["resized"]["logits"][..., : DENSE.vocab], outputs["eval"]["logits"])


def test_inputs_the_model_cannot_honour_are_refused(exports: Exports) -> None:
    outputs = job(exports.results, "mixed")["outputs"]
    assert outputs["padded"]["raised"] == "ValueError"
    assert "padded batches are not supported" in outputs["padded"]["message"]
    assert outputs["too_long"] == {"raised": "ValueError", "message": "nanoMoE GPT: 33 tokens exceed sequence_len 32"}


def test_fresh_model_initialises_experts_and_ties_the_head(exports: Exports) -> None:
    entry = job(exports.results, "fresh")
    assert entry["warnings"] == []
    assert entry["shared"] == [["lm_head.weight", "transformer.wte.weight"]]
    stats = entry["stats"]
    for name in ("gate_proj", "c_fc", "c_proj"):
        mean, std = stats[f"transformer.h.1.mlp.experts.{name}"]
        assert abs(mean) < 0.005 and std == pytest.approx(0.02, rel=0.1), name
    assert stats["transformer.ln_f.weight"] == (1.0, 0.0)


# In-process checks of the files themselves (no folder needed).


def test_shipped_files_are_exactly_what_transformers_needs() -> None:
    files = {f.name: f for f in remote_code("nanomoe")}
    assert sorted(files) == ["configuration_nanomoe_gpt.py", "manager.py", "modeling_nanomoe_gpt.py"]
    modeling = files["modeling_nanomoe_gpt.py"]
    reached = {Path(p).name for p in get_relative_import_files(str(modeling))}
    assert reached == {"configuration_nanomoe_gpt.py", "manager.py"}
    # nothing beyond torch and transformers must be installed (the upstream file imports nanochat at top level)
    for path in files.values():
        assert set(get_imports(str(path))) <= {"torch", "transformers", "math", "typing", "__future__"}, path


def test_config_injects_auto_map_and_validates() -> None:
    assert GPTConfig().auto_map == AUTO_MAP
    assert GPTConfig(auto_map={"AutoConfig": "x.Y"}).auto_map == {"AutoConfig": "x.Y"}
    config = GPTConfig(n_layer=6, n_exp=8, stride=2, moe_start_layer=2)
    assert [config.is_moe_layer(i) for i in range(6)] == [False, False, False, True, False, True]
    assert not any(GPTConfig(n_exp=1).is_moe_layer(i) for i in range(10))
    assert config.num_hidden_layers == 6 and config.hidden_size == 768 and config.max_position_embeddings == 1024
    with pytest.raises(ValueError, match=re.escape("moe_top_k 3 must lie in 1..n_exp")):
        GPTConfig(n_exp=2, moe_top_k=3)
    with pytest.raises(ValueError, match="not a multiple of n_head"):
        GPTConfig(n_embd=100, n_head=12)
