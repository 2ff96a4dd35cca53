"""NeoBERT trainer checkpoints → HF folders, end to end.

The tests write trainer-layout checkpoints (``tests/neobert_fixtures.py``; one more trained and saved by
DeepSpeed's ZeRO on CPU), convert them with pyconv, load the folders in a fresh process with
``trust_remote_code=True`` and the hub offline, and compare what transformers computes with the
training-side forward pass of ``tests/reference/neobert.py`` on the same weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import pyconv

from .neobert_fixtures import MODEL_VOCAB, STEP, Run, shape, weights, write_step
from .reference.hf_folder import assert_clean_load, job, remote_code, run_probe
from .reference.neobert import additive_pad_mask, hidden_states, mlm_logits
from .test_remote_code_neobert import (
    AUTO_MAP,
    LENGTHS,
    MASK_ID,
    TOL,
    VOCAB,
    mask_spellings,
    padded_batch,
    real_tokens,
    reference_logits,
)

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = Path(__file__).parent / "zero_fixtures" / "make_checkpoints.py"

RUNS = {
    # chandar-lab style: xformers' packed w12, torch.compile prefixes, decoder tied (stored twice)
    "packed-tied": Run("packed-tied", shape(), 1, packed=True, prefix="_orig_mod."),
    # pszemraj style: unpacked w1/w2/w3, DDP prefix, untied decoder
    "unpacked-untied": Run("unpacked-untied", shape(), 2, tied=False, prefix="module."),
    # every other switch: GELU, LayerNorm, learned positions, the decoder under the legacy model.decoder.
    "gelu-learned": Run("gelu-learned", shape(act="gelu", intermediate=96, rope=False, rms_norm=False), 3,
                        tied=False, legacy_decoder=True),
    # chandar-lab's head: untied with a bias, only exported with --allow-decoder-bias-drop
    "decoder-bias": Run("decoder-bias", shape(decoder_bias=True), 4, tied=False),
}
FILL_TEXT = "paris is the [MASK] of france ."


def train_with_deepspeed(out: Path) -> Path:
    """A NeoBERT trained three steps and saved by DeepSpeed ZeRO-2 (world size 1, CPU)."""
    run = {"name": "neobert", "stage": 2, "dtype": "fp32", "model": "neobert"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, str(GENERATOR), "--out", str(out), json.dumps(run)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"DeepSpeed generator failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return out / "neobert"


class Exports:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.steps = {name: write_step(root, run) for name, run in RUNS.items()}
        self.sds = {name: weights(run) for name, run in RUNS.items()}
        self.dirs: dict[str, Path] = {}
        (root / "hf").mkdir()
        for name, step in self.steps.items():
            if name == "packed-tied":
                continue
            self.dirs[name] = root / "hf" / name
            options = {"allow_decoder_bias_drop": True} if name == "decoder-bias" else {}
            pyconv.convert(step, self.dirs[name], to="hf", progress=False, **options)
        # the command as a user types it: no -o, so it lands in outputs/<run>/hf/<run>_<step>
        self.cli = subprocess.run([sys.executable, "-m", "pyconv", "convert", str(self.steps["packed-tied"]), "--to", "hf",
                                   "--include-pytorch-bin", "-q"], capture_output=True, text=True, timeout=300)
        self.dirs["packed-tied"] = root / "outputs" / "packed-tied" / "hf" / f"packed-tied_{STEP}"

        trained = train_with_deepspeed(root / "deepspeed")
        zero_run = Run("zero", shape(), 5)
        self.steps["zero"] = write_step(root, zero_run, weights_file=False)
        # Accelerate's save_state puts DeepSpeed's rank files in <step>/pytorch_model/
        shutil.copytree(trained / "ckpt" / "global_step3", self.steps["zero"] / "pytorch_model")
        master = load_file(trained / "master.safetensors")
        self.sds["zero"] = {**master, "decoder.weight": master["model.encoder.weight"]}
        self.zero_meta = json.loads((trained / "meta.json").read_text())
        self.dirs["zero"] = root / "hf" / "zero"
        pyconv.convert(self.steps["zero"], self.dirs["zero"], to="hf", progress=False)

        self.ids, self.keep = padded_batch(seed=11)
        lm = "AutoModelForMaskedLM"
        jobs = [{"name": name, "kind": "load", "auto": lm, "dir": str(folder), "calls": mask_spellings(self.ids, self.keep)}
                for name, folder in self.dirs.items()]
        jobs += [
            {"name": "base", "kind": "load", "auto": "AutoModel", "dir": str(self.dirs["packed-tied"]),
             "calls": [{"name": "int", "kwargs": {"input_ids": self.ids, "attention_mask": self.keep}}]},
            {"name": "fill_mask", "kind": "fill_mask", "dir": str(self.dirs["packed-tied"]), "text": FILL_TEXT, "top_k": 5},
        ]
        self.results = run_probe(jobs, root)

    def shape(self, name: str) -> Any:
        return RUNS[name].shape if name in RUNS else shape()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("neobert-export"))


NAMES = [*RUNS, "zero"]


def expected(exports: Exports, name: str) -> torch.Tensor:
    """The training forward on the same weights; the decoder bias run's export has no bias by design."""
    sd = {k: v for k, v in exports.sds[name].items() if k != "decoder.bias"}
    return reference_logits(sd, replace(exports.shape(name), decoder_bias=False), exports.ids, exports.keep)


def test_cli_writes_to_the_trainers_hf_folder(exports: Exports) -> None:
    assert exports.cli.returncode == 0, exports.cli.stderr
    folder = exports.dirs["packed-tied"]
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "pytorch_model.bin", "modeling_neobert.py", "rotary.py",
            "tokenizer.json", "tokenizer_config.json", "README.md"} <= files
    for path in remote_code("neobert"):
        assert (folder / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_folder_loads_cleanly_in_a_fresh_process(exports: Exports, name: str) -> None:
    entry = job(exports.results, name)
    assert_clean_load(entry)
    assert entry["class"] == "NeoBERTLMHead"
    tied = name in ("packed-tied", "zero")
    assert entry["shared"] == ([["decoder.weight", "model.encoder.weight"]] if tied else [])


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_the_training_forward(exports: Exports, name: str) -> None:
    got = job(exports.results, name)["outputs"]["int"]["logits"]
    want = expected(exports, name)
    torch.testing.assert_close(real_tokens(got, exports.keep), real_tokens(want, exports.keep), **TOL)


@pytest.mark.parametrize("name", ["packed-tied", "gelu-learned"])
def test_naive_qkv_thirds_or_rotate_half_would_not_match(exports: Exports, name: str) -> None:
    """The parity above pins the layout: the naive readings of the trainer's tensors are far off."""
    got = job(exports.results, name)["outputs"]["int"]["logits"]
    sd, s, mask = exports.sds[name], exports.shape(name), additive_pad_mask(exports.keep)
    thirds = mlm_logits(sd, hidden_states(sd, s, exports.ids, mask, qkv="thirds"))
    assert real_tokens(thirds - got, exports.keep).abs().max() > 1.0
    if s.rope:
        halves = mlm_logits(sd, hidden_states(sd, s, exports.ids, mask, rope_pairs="halves"))
        assert real_tokens(halves - got, exports.keep).abs().max() > 1.0


def test_packed_w12_gate_is_its_first_half(exports: Exports) -> None:
    stored = load_file(exports.steps["packed-tied"] / "model.safetensors")
    exported = load_file(exports.dirs["packed-tied"] / "model.safetensors")
    width = RUNS["packed-tied"].shape.ffn_width
    assert width == 136  # I = 200: int(2 * 200 / 3) = 133, rounded up to a multiple of 8
    w12 = stored["_orig_mod.model.transformer_encoder.0.ffn.w12.weight"]
    assert torch.equal(exported["model.transformer_encoder.0.ffn.w1.weight"], w12[:width])
    assert torch.equal(exported["model.transformer_encoder.0.ffn.w2.weight"], w12[width:])
    # gate and up swapped would compute something else
    sd = dict(exports.sds["packed-tied"])
    for i in range(RUNS["packed-tied"].shape.layers):
        p = f"model.transformer_encoder.{i}.ffn"
        sd[f"{p}.w1.weight"], sd[f"{p}.w2.weight"] = sd[f"{p}.w2.weight"], sd[f"{p}.w1.weight"]
    swapped = reference_logits(sd, RUNS["packed-tied"].shape, exports.ids, exports.keep)
    got = job(exports.results, "packed-tied")["outputs"]["int"]["logits"]
    assert real_tokens(swapped - got, exports.keep).abs().max() > 1.0


@pytest.mark.parametrize("name", ["packed-tied", "gelu-learned", "zero"])
def test_attention_mask_spellings_and_padding(exports: Exports, name: str) -> None:
    outputs = job(exports.results, name)["outputs"]
    assert torch.equal(outputs["no_mask"]["logits"], outputs["all_ones"]["logits"])
    for spelling in ("bool", "additive_inf", "additive_min"):
        assert torch.equal(outputs[spelling]["logits"], outputs["int"]["logits"]), spelling
    for row, length in enumerate(LENGTHS):
        torch.testing.assert_close(outputs["int"]["logits"][row, :length], outputs[f"alone_{row}"]["logits"][0], **TOL)


def test_encoder_hidden_states_through_automodel(exports: Exports) -> None:
    got = job(exports.results, "base")["outputs"]["int"]["last_hidden_state"]
    sd, s = exports.sds["packed-tied"], RUNS["packed-tied"].shape
    want = hidden_states(sd, s, exports.ids, additive_pad_mask(exports.keep))
    torch.testing.assert_close(real_tokens(got, exports.keep), real_tokens(want, exports.keep), **TOL)


def test_config_json(exports: Exports) -> None:
    config = json.loads((exports.dirs["packed-tied"] / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["architectures"] == ["NeoBERTLMHead"]
    assert config["model_type"] == "neobert" and config["tie_word_embeddings"] is True
    assert config["max_position_embeddings"] == 32 and config["norm_eps"] == 1e-6 and config["flash_attention"] is False
    from transformers import GenerationConfig

    generation_named = set(GenerationConfig._get_default_generation_params())
    assert not generation_named & set(config), generation_named & set(config)
    assert config["training_info"] == {"max_steps": 2000, "per_device_train_batch_size": 8,
                                       "gradient_accumulation_steps": 1, "mixed_precision": "no", "optimizer": "adamw",
                                       "learning_rate": 3e-4, "dataset": "tiny-corpus", "tokenizer": "tiny-metaspace",
                                       "step": STEP}
    untied = json.loads((exports.dirs["unpacked-untied"] / "config.json").read_text())
    assert untied["tie_word_embeddings"] is False


def test_tokenizer_is_padded_to_the_model_vocabulary(exports: Exports) -> None:
    from transformers import AutoTokenizer

    folder = exports.dirs["packed-tied"]
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok) == MODEL_VOCAB and tok.model_max_length == 32
    assert tok.convert_ids_to_tokens([VOCAB, MODEL_VOCAB - 1]) == [
        f"<|neobert_extra_token_{VOCAB}|>", f"<|neobert_extra_token_{MODEL_VOCAB - 1}|>"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 32


def test_fill_mask_pipeline_end_to_end(exports: Exports) -> None:
    entry = job(exports.results, "fill_mask")
    assert entry["warnings"] == []
    # the Metaspace tokenizer puts a lone ▁ before a typed [MASK]
    assert entry["tokens"][3:6] == ["▁the", "▁", "[MASK]"]
    ids = torch.tensor([entry["input_ids"]])
    probs = reference_logits(exports.sds["packed-tied"], RUNS["packed-tied"].shape, ids)[0, 5].softmax(-1)
    top = probs.topk(5)
    assert [p["token"] for p in entry["predictions"]] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([p["score"] for p in entry["predictions"]]), top.values, **TOL)


def test_readme_usage_snippet_runs(exports: Exports, tmp_path: Path) -> None:
    """The card's snippet, run as printed: it drops the Metaspace ▁ before the mask and shows the top tokens."""
    folder = exports.dirs["packed-tied"]
    card = (folder / "README.md").read_text()
    assert "▁" in card and "trust_remote_code=True" in card
    code = re.search(r"```python\n(.*?)```", card, re.S)
    assert code is not None
    script = tmp_path / "snippet.py"
    script.write_text(code.group(1).replace("path/to/this/folder", str(folder)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.splitlines()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode("Paris is the [MASK] of France.").ids
    where = ids.index(MASK_ID)
    assert tok.id_to_token(ids[where - 1]) == "▁"
    ids = ids[: where - 1] + ids[where:]
    logits = reference_logits(exports.sds["packed-tied"], RUNS["packed-tied"].shape, torch.tensor([ids]))
    top = logits[0, ids.index(MASK_ID)].topk(5).indices.tolist()
    assert printed[0] == str([tok.id_to_token(i) for i in top])
    assert printed[1] == "torch.Size([2, 64])"


def test_decoder_bias_drop_reports_the_logit_change(exports: Exports, tmp_path: Path, cli: Any) -> None:
    step = exports.steps["decoder-bias"]
    refused = cli("convert", step, "-o", tmp_path / "refused", "--to", "hf")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "tensor 'decoder.bias'" in refused.stderr and "--allow-decoder-bias-drop" in refused.stderr
    allowed = cli("convert", step, "-o", tmp_path / "allowed", "--to", "hf", "--allow-decoder-bias-drop", "-q")
    assert allowed.returncode == 0, allowed.stderr
    reported = float(re.search(r"max \|Δlogit\| ([0-9.e+-]+)", allowed.stderr)[1])
    # what the change really is on the probe batch: the trained head (with bias) against the export
    sd, s = exports.sds["decoder-bias"], RUNS["decoder-bias"].shape
    with_bias = reference_logits(sd, s, exports.ids, exports.keep)
    got = job(exports.results, "decoder-bias")["outputs"]["int"]["logits"]
    change = float(real_tokens(with_bias - got, exports.keep).abs().max())
    assert change == pytest.approx(reported, rel=1e-3)
    assert change > 1.0


def test_zero_checkpoint_is_read_from_the_rank_files(exports: Exports) -> None:
    assert exports.zero_meta["tied"] == {"decoder.weight": "model.encoder.weight"}
    exported = load_file(exports.dirs["zero"] / "model.safetensors")
    assert set(exported) == set(exports.sds["zero"]) - {"decoder.weight"}
    for name, value in exported.items():
        assert torch.equal(value, exports.sds["zero"][name]), name


# --- refusals: each a one-line error naming the file and, where there is one, the tensor ------------------


def broken_step(tmp_path: Path, run: Run, **kwargs: Any) -> Path:
    return write_step(tmp_path, run, **kwargs)


def edit_yaml(step: Path, **model: Any) -> None:
    import yaml

    doc = yaml.safe_load((step / "config.yaml").read_text())
    doc["model"].update(model)
    (step / "config.yaml").write_text(yaml.safe_dump(doc))


def test_missing_tokenizer_is_refused(tmp_path: Path) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"], tokenizer=False)
    with pytest.raises(pyconv.ConversionError, match=r"no tokenizer/ folder"):
        pyconv.convert(step, tmp_path / "out", to="hf", dry_run=True)


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"], weights_file=False)
    with pytest.raises(pyconv.ConversionError, match=r"no weights: neither model.safetensors nor a DeepSpeed"):
        pyconv.convert(step, tmp_path / "out", to="hf", dry_run=True)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"])
    tensors = load_file(step / "model.safetensors")
    del tensors["module.model.transformer_encoder.1.wo.weight"]
    save_file(tensors, step / "model.safetensors")
    with pytest.raises(pyconv.ConversionError, match=r"tensor 'model.transformer_encoder.1.wo.weight': missing"):
        pyconv.convert(step, tmp_path / "out", to="hf", dry_run=True)


@pytest.mark.parametrize(("field", "value", "tensor", "shape"), [
    ("hidden_size", 48, "model.encoder.weight", r"\(128, 48\)"),
    ("intermediate_size", 240, "model.transformer_encoder.0.ffn.w1.weight", r"\(160, 64\)"),
    ("vocab_size", 256, "model.encoder.weight", r"\(256, 64\)"),
])
def test_config_dimensions_disagreeing_with_weights_name_the_tensor(tmp_path: Path, field: str, value: int,
                                                                    tensor: str, shape: str) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"], info={})
    edit_yaml(step, **{field: value})
    with pytest.raises(pyconv.ConversionError, match=rf"tensor '{re.escape(tensor)}': has shape .* implies {shape}"):
        pyconv.convert(step, tmp_path / "out", to="hf", dry_run=True)


def test_ngpt_is_refused_with_the_reason(tmp_path: Path, cli: Any) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"])
    edit_yaml(step, ngpt=True)
    proc = cli("convert", step, "-o", tmp_path / "out", "--to", "hf")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "config.yaml: ngpt (NormNeoBERT) cannot be exported" in proc.stderr and "unit sphere" in proc.stderr


def test_tokenizer_info_from_another_run_is_refused(tmp_path: Path) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"], info={"vocab_size": MODEL_VOCAB, "pad_token_id": 3})
    with pytest.raises(pyconv.ConversionError, match=r"tokenizer_info.json: pad_token_id is 3 but config.yaml's "
                                                     r"model.pad_token_id is 0"):
        pyconv.convert(step, tmp_path / "out", to="hf", dry_run=True)


def test_layer_norm_eps_is_the_legacy_spelling_of_norm_eps(tmp_path: Path) -> None:
    step = broken_step(tmp_path, RUNS["unpacked-untied"])
    import yaml

    doc = yaml.safe_load((step / "config.yaml").read_text())
    doc["model"]["layer_norm_eps"] = doc["model"].pop("norm_eps")
    (step / "config.yaml").write_text(yaml.safe_dump(doc))
    result = pyconv.convert(step, tmp_path / "out", to="hf", progress=False)
    assert json.loads((result.output / "config.json").read_text())["norm_eps"] == 1e-6


def with_norm_eps(tmp_path: Path, text: str) -> Path:
    """A step whose config.yaml spells norm_eps as ``text``, as a hand-edited file would."""
    step = broken_step(tmp_path, RUNS["unpacked-untied"])
    config = step / "config.yaml"
    config.write_text(re.sub(r"(?m)^(\s*norm_eps:).*$", rf"\g<1> {text}", config.read_text()))
    return step


@pytest.mark.parametrize("text", ["1e-5", "1E-5", "+1.0e-3", ".5e-1", "5E-6", "1.e-5", "2e-1"])
def test_config_yaml_numbers_are_read_as_yaml_1_2_reads_them(tmp_path: Path, text: str) -> None:
    from ruamel.yaml import YAML

    expected = YAML(typ="safe", pure=True).load(f"norm_eps: {text}")["norm_eps"]
    assert isinstance(expected, float)
    result = pyconv.convert(with_norm_eps(tmp_path, text), tmp_path / "out", to="hf", progress=False)
    assert json.loads((result.output / "config.json").read_text())["norm_eps"] == expected


@pytest.mark.parametrize("text", ["1e-5x", "1e5e5", "e-5", "1,0e-5", "'1e-5'", "0x1p-3"])
def test_config_yaml_garbage_is_still_refused(tmp_path: Path, cli: Any, text: str) -> None:
    step = with_norm_eps(tmp_path, text)
    r = cli("convert", step, "-o", tmp_path / "out", "--to", "hf", "-q")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"{step / 'config.yaml'}: norm_eps is " in r.stderr and "not a positive number" in r.stderr
    assert not (tmp_path / "out").exists()
