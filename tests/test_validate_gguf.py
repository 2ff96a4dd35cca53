"""``pyconv validate`` on GGUF: sound files pass, each kind of damage fails the check made for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

import pyconv
from pyconv.validate import validate

from .conftest import run_cli


@pytest.fixture(scope="module")
def tiny_gguf(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny llama with SmolLM2's tokenizer, saved by transformers, as f32 GGUF."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    src = tmp_path_factory.mktemp("tiny-src")
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(src)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_hf / f, src)
    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    pyconv.convert(src, out, outtype="f32", progress=False)
    return out


def rewrite(src: Path, dst: Path, *, edit: Callable[[str, np.ndarray], np.ndarray] | None = None,
            drop_keys: tuple[str, ...] = (), f16: tuple[str, ...] = ()) -> Path:
    """Copy a GGUF through gguf-py's reader and writer, changing what a test needs broken."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_keys:
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), vtype, field.types[-1])
        else:
            w.add_key_value(key, field.contents(), vtype)
    for t in r.tensors:
        data = np.asarray(t.data).copy()
        if edit:
            data = edit(t.name, data)
        if t.name in f16:
            data = data.astype(np.float16)
        # quantized data is kept as its blocks' bytes
        quantized = t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type if quantized else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def status(report: pyconv.validate.Report, name: str) -> str:
    return next(c.status for c in report.checks if c.name == name)


def test_a_real_model_passes_everything(smollm2_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "smol.gguf"
    pyconv.convert(smollm2_hf, out, outtype="q8_0", progress=False)
    r = run_cli("validate", out, "--strict", "--reference", smollm2_hf, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and checks["runtime"]["status"] == "pass" and "Paris" in checks["runtime"]["data"]["continuation"]
    assert checks["reference"]["data"]["top1_agreement"] >= 0.9
    assert checks["fingerprint"]["status"] == "pass" and checks["container"]["status"] == "pass"


def test_random_weights_fail_the_generation_probe(tiny_gguf: Path) -> None:
    report = validate(tiny_gguf)
    assert status(report, "runtime") == "fail" and not report.ok
    assert validate(tiny_gguf, probe=False).ok


@pytest.mark.parametrize("damage,check", [
    ({"edit": lambda n, d: np.where(np.arange(d.size).reshape(d.shape) == 3, np.nan, d).astype(d.dtype) if n == "blk.0.attn_q.weight" else d}, "finite"),
    ({"edit": lambda n, d: d * 1000 if n == "blk.1.ffn_down.weight" else d}, "projection rms"),
    ({"f16": ("blk.0.attn_norm.weight",)}, "norm types"),
])
def test_damage_is_caught(tiny_gguf: Path, tmp_path: Path, damage: dict, check: str) -> None:
    assert validate(tiny_gguf, probe=False).ok
    broken = rewrite(tiny_gguf, tmp_path / "broken.gguf", **damage)
    report = validate(broken, probe=False)
    assert status(report, check) == "fail" and not report.ok


def test_missing_metadata_warns_or_fails_with_strict(tiny_gguf: Path, tmp_path: Path) -> None:
    broken = rewrite(tiny_gguf, tmp_path / "nokeys.gguf", drop_keys=("llama.context_length",))
    assert status(validate(broken, probe=False), "metadata") == "warn"
    r = run_cli("validate", broken, "--strict", "--no-probe")
    assert r.returncode == 1 and "missing llama.context_length" in r.stdout


def test_fingerprint_mismatch_and_unreadable_files(tiny_gguf: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "t.gguf"
    shutil.copy(tiny_gguf, copy)
    (tmp_path / "t.gguf.sha256").write_text("sha256-" + "0" * 64 + "\n")
    assert status(validate(copy, probe=False), "fingerprint") == "fail"
    copy.write_bytes(copy.read_bytes()[:1000])
    report = validate(copy, probe=False)
    assert status(report, "container") == "fail" and not report.ok
