"""Hugging Face folders out: transformers loads them with no missing, unexpected or mismatched keys and no
warnings and gives the source's logits; safetensors and torch.load read the weights; GGUF files come back
as the HF model transformers' own GGUF loader makes of them."""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import pyconv
from pyconv.targets import torch_zip
from pyconv.validate.hf import recording

from .archs_fixtures import FAMILIES, SAMPLE_TEXTS
from .conftest import run_cli, smollm2_gguf

IDS = torch.tensor([[5, 17, 300, 42, 7, 99, 1000, 3, 250, 64, 11, 2]])


class Models:
    """Each family's tiny random checkpoint (saved by transformers, with a tokenizer) built once."""

    def __init__(self, root: Path, smollm2: Path) -> None:
        self.root, self.smollm2 = root, smollm2
        self.folders: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        if name not in self.folders:
            folder = self.root / name
            folder.mkdir()
            FAMILIES[name].build(folder, self.smollm2)
            self.folders[name] = folder
        return self.folders[name]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Models:
    return Models(tmp_path_factory.mktemp("hf-models"), smollm2_hf)


def load(folder: Path, *, gguf_file: str | None = None) -> tuple[Any, dict[str, Any], list[str]]:
    from transformers import AutoModelForCausalLM

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    with recording() as messages:
        model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True, **extra)
    return model.eval(), info, messages


def logits(model: Any, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids % model.config.vocab_size).logits


def assert_clean(info: dict[str, Any], messages: list[str]) -> None:
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert messages == [], messages


def as_bin_source(folder: Path, dest: Path) -> Path:
    """The same model as transformers 4 saved it: config.json plus torch.save of the state dict, tied
    tensors sharing storage."""
    model, _info, _messages = load(folder)
    dest.mkdir()
    model.config.save_pretrained(dest)
    torch.save(model.state_dict(), dest / "pytorch_model.bin")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        if (folder / name).exists():
            shutil.copy(folder / name, dest / name)
    return dest


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("source_kind", ["safetensors", "bin"])
def test_hf_to_hf_keeps_the_logits(models: Models, tmp_path: Path, family: str, source_kind: str) -> None:
    src = models.folder(family)
    if source_kind == "bin":
        src = as_bin_source(src, tmp_path / "bin-source")
    out = tmp_path / "out"
    pyconv.convert(src, out, to="hf", progress=False)
    ours, info, messages = load(out)
    assert_clean(info, messages)
    ref, _info, _messages = load(src)
    assert torch.equal(logits(ours), logits(ref))
    config = json.loads((out / "config.json").read_text())
    assert isinstance(config["tie_word_embeddings"], bool) and config["dtype"] == "float32"
    saved = load_file(out / "model.safetensors")
    assert ("lm_head.weight" in saved) != config["tie_word_embeddings"]
    if config["tie_word_embeddings"]:
        assert ours.lm_head.weight.data_ptr() == ours.get_input_embeddings().weight.data_ptr()


def test_folder_has_card_generation_config_and_normalized_tokenizer(models: Models, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(models.folder("llama"), src)
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    tcfg["model_max_length"] = int(1e30)  # what transformers writes when it does not know
    (src / "tokenizer_config.json").write_text(json.dumps(tcfg))
    out = tmp_path / "out"
    pyconv.convert(src, out, to="hf", progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md"} <= names
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 128
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.model_max_length == 128
    assert tok(SAMPLE_TEXTS[0])["input_ids"] == AutoTokenizer.from_pretrained(src)(SAMPLE_TEXTS[0])["input_ids"]
    card = (out / "README.md").read_text()
    import hashlib

    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert f"`model.safetensors` | `{digest}`" in card and "AutoModelForCausalLM.from_pretrained" in card
    assert "LlamaForCausalLM" in card
    assert "Source files not hashed (`--hash-inputs` adds them)." in card
    pyconv.convert(src, tmp_path / "hashed", to="hf", progress=False, hash_inputs=True)
    source = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert f"- `model.safetensors`: `{source}`" in (tmp_path / "hashed" / "README.md").read_text()


def test_special_token_missing_from_the_vocabulary_is_an_error(models: Models, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(models.folder("llama"), src)
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    tcfg["eos_token"] = "<|no-such-token|>"
    (src / "tokenizer_config.json").write_text(json.dumps(tcfg))
    with pytest.raises(pyconv.ConversionError, match=re.escape("eos_token '<|no-such-token|>' is not in the tokenizer's vocabulary")):
        pyconv.convert(src, tmp_path / "out", to="hf", progress=False)


def test_sharded_output_and_pytorch_bin(models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny zip64 limit: every member past it takes the zip64 records a >4 GB shard needs
    monkeypatch.setattr(torch_zip, "ZIP64_LIMIT", 2_000_000)
    src = models.folder("qwen2")
    out = tmp_path / "out"
    pyconv.convert(src, out, to="hf", max_shard_size=4_000_000, include_pytorch_bin=True, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    bin_index = json.loads((out / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    bins = sorted(set(bin_index["weight_map"].values()))
    assert len(shards) == len(bins) > 1
    st = {k: v for s in shards for k, v in load_file(out / s).items()}
    for b in bins:
        assert zipfile.ZipFile(out / b).testzip() is None  # every CRC-32 right
        for loaded in (torch.load(out / b, weights_only=True), torch.load(out / b, weights_only=True, mmap=True)):
            for name, t in loaded.items():
                assert bin_index["weight_map"][name] == b and torch.equal(t, st[name]), name
    ours, info, messages = load(out)
    assert_clean(info, messages)
    assert torch.equal(logits(ours), logits(load(src)[0]))


def test_pytorch_bin_alone_loads_in_transformers(models: Models, tmp_path: Path) -> None:
    src = models.folder("gpt2")
    out = tmp_path / "out"
    pyconv.convert(src, out, to="hf", include_pytorch_bin=True, outtype="bf16", progress=False)
    (out / "model.safetensors").unlink()
    ours, info, messages = load(out)
    assert_clean(info, messages)
    ref = load(src)[0].to(torch.bfloat16).float()
    assert torch.equal(logits(ours), logits(ref))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_config_ties_drop_a_differing_head_with_a_warning(models: Models, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    shutil.copytree(models.folder("qwen2"), src)  # tied: the checkpoint holds no lm_head
    tensors = load_file(src / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] * 2
    from safetensors.torch import save_file

    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="pyconv"):
        pyconv.convert(src, tmp_path / "out", to="hf", progress=False)
    assert "lm_head.weight' is dropped" in caplog.text
    assert "lm_head.weight" not in load_file(tmp_path / "out" / "model.safetensors")


@pytest.mark.parametrize("vocab_size", [49152 + 64, 49000])
def test_vocab_size_pads_or_truncates_embedding_and_head(models: Models, tmp_path: Path, vocab_size: int,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    src = models.folder("llama")  # untied: embedding and head both change
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="pyconv"):
        pyconv.convert(src, out, to="hf", vocab_size=vocab_size, progress=False)
    rows = "49152..49215 added as zeros" if vocab_size > 49152 else "49000..49151 dropped"
    assert f"'model.embed_tokens.weight': rows {rows}" in caplog.text and f"'lm_head.weight': rows {rows}" in caplog.text
    before, after = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    keep = min(vocab_size, 49152)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert after[name].shape == (vocab_size, 64)
        assert torch.equal(after[name][:keep], before[name][:keep])
        assert not after[name][keep:].any()
    model, info, messages = load(out)
    assert_clean(info, messages)
    assert model.config.vocab_size == vocab_size


def test_unknown_model_type_is_guessed_from_tensor_names(models: Models, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    shutil.copytree(models.folder("mistral"), src)
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["MyTrainerLM"]
    config["model_type"] = "my-trainer"
    (src / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="pyconv"):
        pyconv.convert(src, tmp_path / "out", to="native", progress=False)
    assert "config.json names ['MyTrainerLM'], which pyconv does not know; the tensor names look like 'llama'" in caplog.text


def test_missing_config_for_an_hf_folder_is_one_clear_error(models: Models, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(models.folder("llama") / "model.safetensors", src / "model.safetensors")
    r = run_cli("convert", src, "-o", tmp_path / "out", "--to", "hf")
    assert r.returncode == 1 and "no config.json beside the weights" in r.stderr and r.stderr.count("\n") == 1


# --- GGUF in -------------------------------------------------------------------------------------------


def test_smollm2_gguf_to_hf_matches_transformers_gguf_loader(tmp_path: Path, smollm2_hf: Path) -> None:
    gguf_file = smollm2_gguf()
    out = tmp_path / "smollm2-hf"
    r = run_cli("convert", gguf_file, "-o", out, "--to", "hf")
    assert r.returncode == 0, r.stderr
    ours, info, messages = load(out)
    assert_clean(info, messages)
    theirs, _info, _messages = load(gguf_file.parent, gguf_file=gguf_file.name)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(out)(SAMPLE_TEXTS[0], return_tensors="pt")["input_ids"]
    # smollm2_hf holds the tokenizer transformers made of the same GGUF file
    assert ids.tolist() == AutoTokenizer.from_pretrained(smollm2_hf)(SAMPLE_TEXTS[0], return_tensors="pt")["input_ids"].tolist()
    assert torch.equal(logits(ours, ids), logits(theirs, ids))
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["rms_norm_eps"] == 1e-05 and config["num_key_value_heads"] == 3


# (family, the logits tolerance of GGUF f32 → HF against the source: exact copies except gemma's
# norms, stored w + 1 and read back as (w + 1) - 1 in float32)
GGUF_ROUND_TRIPS = [("llama", 0.0), ("mixtral", 0.0), ("qwen2", 0.0), ("gemma", 1e-5), ("phi3", 0.0), ("gpt2", 0.0)]


@pytest.mark.parametrize(("family", "tol"), GGUF_ROUND_TRIPS, ids=[f for f, _ in GGUF_ROUND_TRIPS])
def test_pyconv_gguf_back_to_hf(models: Models, tmp_path: Path, family: str, tol: float) -> None:
    src = models.folder(family)
    gguf_file = tmp_path / f"{family}.gguf"
    pyconv.convert(src, gguf_file, outtype="f32", progress=False, fingerprint=False)
    out = tmp_path / "hf"
    # the tokenizer from the source folder: GGUF tokenizers are the SmolLM2 test's, and slow to rebuild
    pyconv.convert(gguf_file, out, to="hf", tokenizer=str(src), progress=False)
    ours, info, messages = load(out)
    assert_clean(info, messages)
    want = logits(load(src)[0])
    assert float((logits(ours) - want).abs().max()) <= tol
    if FAMILIES[family].hf_gguf_loader:
        theirs = load(tmp_path, gguf_file=gguf_file.name)[0]
        assert torch.allclose(logits(ours), logits(theirs), atol=1e-5, rtol=0)


def test_gguf_without_the_qk_unpermute_would_differ(models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from pyconv import registry

    src = models.folder("llama")
    gguf_file = tmp_path / "llama.gguf"
    pyconv.convert(src, gguf_file, outtype="f32", progress=False, fingerprint=False)
    tables = registry.catalog().tables
    monkeypatch.setitem(tables, "llama", dataclasses.replace(tables["llama"], gguf=dataclasses.replace(tables["llama"].gguf,
                                                                                                      permute_qk=False)))
    pyconv.convert(gguf_file, tmp_path / "hf", to="hf", tokenizer=str(src), progress=False)
    assert float((logits(load(tmp_path / "hf")[0]) - logits(load(src)[0])).abs().max()) > 0.01


def test_dry_run_lists_the_recipes(models: Models, tmp_path: Path) -> None:
    r = run_cli("convert", models.folder("gpt2"), "-o", tmp_path / "out", "--to", "hf", "--include-pytorch-bin", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "pytorch_model.bin" in r.stdout and "model.safetensors" in r.stdout and not (tmp_path / "out").exists()



# --- DeepSpeed ZeRO in ---------------------------------------------------------------------------------

from .test_sources_zero import Reference, references, zero_runs  # noqa: E402,F401  (session fixtures DeepSpeed trains)


@pytest.mark.parametrize("run", ["llama_s3_bf16_ws2", "gpt2_s2_bf16_ws2"])
def test_zero_checkpoint_to_hf_holds_the_trained_weights(references: dict[str, Reference], tmp_path: Path, run: str) -> None:
    """The fp32 master weights DeepSpeed recorded while training, loaded into transformers' own model, are
    the reference: pyconv's folder must give their logits exactly."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ref = references[run]
    out = tmp_path / "hf"
    pyconv.convert(ref.ckpt, out, to="hf", progress=False)
    ours, info, messages = load(out)
    assert_clean(info, messages)
    trained = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ref.ckpt), dtype=torch.float32).eval()
    missing, unexpected = trained.load_state_dict(ref.expected("master"), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing)
    trained.tie_weights()
    assert torch.equal(logits(ours), logits(trained))
