"""nanoMoE training checkpoints → HF folders, end to end.

The tests write what nanoMoE's train.py saves: ``ckpt.pt`` (``{"model": state dict with torch.compile's
``_orig_mod.`` prefix, "model_args": ..., "optimizer": ..., ...}``, older revisions spelling ``block_size``
and ``top_k``) and the ``save_pretrained`` folder of later revisions (config.json, weights without the tied
head, and the upstream modeling files). pyconv reads them without running a pickle; the folders it writes
load in a fresh process with ``trust_remote_code=True`` and compute what ``tests/reference/nanomoe.py``
computes on the same weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import pyconv

from .reference.hf_folder import assert_clean_load, job, remote_code, run_probe
from .reference.nanomoe import NanoMoEShape, forward, greedy, next_token_loss, trainer_state_dict
from .test_remote_code_nanomoe import AUTO_MAP, DENSE, MIXED, TIGHT, TOL


def model_args(shape: NanoMoEShape, *, legacy: bool = False) -> dict[str, Any]:
    """train.py's model_args; ``legacy``: the revision before block_size and top_k were renamed."""
    args: dict[str, Any] = {
        "n_layer": shape.layers, "n_head": shape.heads, "n_embd": shape.embd, "vocab_size": shape.vocab,
        "n_exp": shape.n_exp, "use_aux_loss": True, "use_router_z_loss": True, "use_noisy_top_k": shape.noisy,
        "aux_loss_weight": shape.aux_weight, "router_z_loss_weight": shape.z_weight,
        "train_capacity": shape.train_capacity, "eval_capacity": shape.eval_capacity,
        "min_capacity": shape.min_capacity, "stride": shape.stride, "moe_start_layer": shape.moe_start,
        "use_qwen3_moe_mlp": shape.qwen3, "use_switch_tfm_init": False, "router_use_full_prec": False,
        "use_router_ortho_loss": False, "experts_ortho_loss_weight": 0.01,
    }
    if legacy:
        args.update(block_size=shape.seq_len, top_k=shape.top_k, bias=False, dropout=0.0)
    else:
        args.update(sequence_len=shape.seq_len, moe_top_k=shape.top_k)
    return args


def save_ckpt(path: Path, shape: NanoMoEShape, seed: int, *, legacy: bool = False, **changes: Any) -> dict[str, torch.Tensor]:
    """A ckpt.pt as train.py writes it: the compiled model's state dict (head and embedding one tensor)."""
    sd = trainer_state_dict(shape, seed)
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "params": [0]}]}
    args = {**model_args(shape, legacy=legacy), **changes}
    checkpoint = {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}, "optimizer": optimizer, "model_args": args,
                  "iter_num": 10, "best_val_loss": torch.tensor(3.25), "config": {"batch_size": 8, "out_dir": "out"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return sd


def save_folder(folder: Path, shape: NanoMoEShape, seed: int) -> dict[str, torch.Tensor]:
    """What later train.py revisions save: save_pretrained (transformers 4 drops the tied head) and the three
    upstream modeling files, which import nanochat and must not be what the export ships."""
    sd = trainer_state_dict(shape, seed)
    folder.mkdir(parents=True)
    config = {"architectures": ["GPT"], "model_type": "nanomoe_gpt", "auto_map": AUTO_MAP, "torch_dtype": "float32",
              "transformers_version": "4.57.1", **model_args(shape, legacy=True)}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.clone() for k, v in sd.items() if k != "lm_head.weight"}, folder / "model.safetensors",
              metadata={"format": "pt"})
    for name in ("configuration_nanomoe_gpt.py", "modeling_nanomoe_gpt.py", "manager.py"):
        (folder / name).write_text("import nanochat.upstream  # the upstream file\n")
    return sd


class Exports:
    def __init__(self, root: Path) -> None:
        self.shapes = {"mixed": MIXED, "tight": TIGHT, "folder": DENSE}
        self.sds = {"mixed": save_ckpt(root / "out-nanomoe" / "ckpt.pt", MIXED, 1),
                    "tight": save_ckpt(root / "out-legacy" / "ckpt.pt", TIGHT, 2, legacy=True),
                    "folder": save_folder(root / "out-folder" / "nanomoe-50", DENSE, 3)}
        (root / "hf").mkdir()
        # the command, exactly
        self.cli = subprocess_cli(root, "convert", "out-nanomoe/ckpt.pt", "-o", "hf/nanomoe", "--to", "hf")
        self.dirs = {"mixed": root / "hf" / "nanomoe", "tight": root / "hf" / "legacy", "folder": root / "hf" / "folder"}
        pyconv.convert(root / "out-legacy" / "ckpt.pt", self.dirs["tight"], to="hf", progress=False)
        pyconv.convert(root / "out-folder" / "nanomoe-50", self.dirs["folder"], to="hf", progress=False)
        gen = torch.Generator().manual_seed(5)
        self.ids = torch.randint(0, MIXED.vocab, (2, 12), generator=gen)
        self.prompt = torch.randint(0, MIXED.vocab, (1, 6), generator=gen)
        self.new_tokens = 8
        self.resaved = root / "resaved"

        def call(name: str, **kwargs: Any) -> dict[str, Any]:
            options = {k: kwargs.pop(k) for k in ("method",) if k in kwargs}
            return {"name": name, "kwargs": kwargs, **options}

        scored = call("eval", input_ids=self.ids, labels=self.ids)
        mixed_calls = [scored, call("tuple", input_ids=self.ids, labels=self.ids, return_dict=False),
                       call("generate", method="generate", input_ids=self.prompt,
                            attention_mask=torch.ones_like(self.prompt), max_new_tokens=self.new_tokens, do_sample=False)]
        jobs = [{"name": name, "kind": "load", "auto": "AutoModelForCausalLM", "dir": str(folder),
                 "calls": mixed_calls if name == "mixed" else [scored]} for name, folder in self.dirs.items()]
        jobs[0]["save_to"] = str(self.resaved)
        self.results = run_probe(jobs, root)
        second = root / "second-process"
        second.mkdir()
        self.results |= run_probe([{"name": "resaved", "kind": "load", "auto": "AutoModelForCausalLM",
                                    "dir": str(self.resaved), "calls": [scored]}], second)


def subprocess_cli(cwd: Path, *args: str) -> Any:
    import subprocess

    return subprocess.run([sys.executable, "-m", "pyconv", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("nanomoe-export"))


def test_cli_command_writes_the_folder(exports: Exports) -> None:
    assert exports.cli.returncode == 0, exports.cli.stderr
    folder = exports.dirs["mixed"]
    assert {"config.json", "model.safetensors", "configuration_nanomoe_gpt.py", "modeling_nanomoe_gpt.py",
            "manager.py", "README.md"} <= {p.name for p in folder.iterdir()}
    for name in ("mixed", "folder"):
        for path in remote_code("nanomoe"):
            assert (exports.dirs[name] / path.name).read_bytes() == path.read_bytes(), (name, path.name)


@pytest.mark.parametrize("name", ["mixed", "tight", "folder", "resaved"])
def test_folder_loads_cleanly_with_the_head_tied(exports: Exports, name: str) -> None:
    entry = job(exports.results, name)
    assert_clean_load(entry)
    assert entry["class"] == "GPT"
    assert entry["shared"] == [["lm_head.weight", "transformer.wte.weight"]]


def test_config_json(exports: Exports) -> None:
    for name in ("mixed", "tight"):
        config = json.loads((exports.dirs[name] / "config.json").read_text())
        assert config["auto_map"] == AUTO_MAP and config["model_type"] == "nanomoe_gpt"
        assert config["tie_word_embeddings"] is True and config["moe_top_k"] == 2
        assert config["sequence_len"] == 32 and "top_k" not in config and "block_size" not in config
        assert config["n_exp"] == 4 and config["stride"] == 2 and config["moe_start_layer"] == 1
    weights = load_file(exports.dirs["mixed"] / "model.safetensors")
    assert "lm_head.weight" not in weights and weights["transformer.h.1.mlp.experts.c_fc"].shape == (4, 32, 128)


@pytest.mark.parametrize("name", ["mixed", "tight", "folder"])
def test_logits_and_loss_equal_the_training_forward(exports: Exports, name: str) -> None:
    out = job(exports.results, name)["outputs"]["eval"]
    logits, records = forward(exports.sds[name], exports.shapes[name], exports.ids)
    torch.testing.assert_close(out["logits"], logits, **TOL)
    torch.testing.assert_close(out["loss"], next_token_loss(logits, exports.ids), **TOL)
    if name == "tight":  # the capacity is exceeded, and the export drops the same choices
        assert all(r.dropped > 0 for r in records)


def test_tuple_outputs(exports: Exports) -> None:
    outputs = job(exports.results, "mixed")["outputs"]
    logits, loss, losses = outputs["tuple"]
    assert torch.equal(logits, outputs["eval"]["logits"]) and torch.equal(loss, outputs["eval"]["loss"])
    assert losses == {"ntp_loss": loss, "aux_loss": None, "router_z_loss": None}


def test_generate_is_greedy_decoding(exports: Exports) -> None:
    got = job(exports.results, "mixed")["outputs"]["generate"]
    assert torch.equal(got, greedy(exports.sds["mixed"], MIXED, exports.prompt, exports.new_tokens))


def test_save_pretrained_round_trips(exports: Exports) -> None:
    got = job(exports.results, "resaved")["outputs"]["eval"]["logits"]
    assert torch.equal(got, job(exports.results, "mixed")["outputs"]["eval"]["logits"])
    saved = json.loads((exports.resaved / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP and saved["moe_top_k"] == 2


# --- refusals -------------------------------------------------------------------------------------------


def test_code_in_the_pickle_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_ckpt(path, DENSE, 4, trainer=Exploit())
    with pytest.raises(pyconv.ConversionError, match=r"refused: it names the global '\w+\.exec'"):
        pyconv.convert(path, tmp_path / "out", to="hf", dry_run=True)
    assert not (tmp_path / "ran").exists()


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(Path('ran'))!r}, 'w')",))


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_head": None}, r"ckpt.pt: the model arguments have no n_head"),
    ({"bias": True}, r"ckpt.pt: model_args has bias=True"),
    ({"n_exp": 2}, r"tensor 'transformer.h.1.mlp.router.w_g.weight': has shape \(4, 32\), the model arguments imply "
                   r"\(2, 32\)"),
    ({"stride": 1}, r"tensor 'transformer.h.2.mlp.router.w_g.weight': missing"),
])
def test_model_arguments_that_disagree_with_the_weights(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = tmp_path / "ckpt.pt"
    save_ckpt(path, MIXED, 5, **changes)
    with pytest.raises(pyconv.ConversionError, match=message):
        pyconv.convert(path, tmp_path / "out", to="hf", dry_run=True)
