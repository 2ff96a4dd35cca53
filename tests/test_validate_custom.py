"""``pyconv validate`` on NeoBERT and nanoMoE exports, run as a user runs it (a fresh process, hub offline):
every check the families promise passes on a sound export, and the checks fail on a broken one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import pyconv
import pyconv.validate
from pyconv.families.neobert.checks import PROBE_TEXTS
from pyconv.validate.hf import SAMPLE_TEXTS
from pyconv.validate.similarity import SIMILAR, UNRELATED

from .neobert_fixtures import Run, shape, write_step
from .test_export_nanomoe import save_ckpt
from .test_remote_code_nanomoe import MIXED

TEXTS = [*SAMPLE_TEXTS, *PROBE_TEXTS, *SIMILAR, *UNRELATED, "The capital of France is [MASK]."]


def validate(cli: Any, folder: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """``pyconv validate --json`` in a fresh process."""
    proc = cli("validate", folder, "--json")
    report = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c for c in report["checks"]}


def validate_here(folder: Path) -> tuple[bool, dict[str, Any]]:
    """The same checks in this process (a broken copy's code gets its own module: transformers keys it by hash)."""
    report = pyconv.validate.validate(folder)
    return report.ok, {c.name: c.status for c in report.checks}


@pytest.fixture(scope="module")
def neobert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validate-neobert")
    step = write_step(root, Run("bpe", shape(), 7, packed=True), texts=TEXTS)
    return pyconv.convert(step, root / "hf", to="hf", progress=False).output


def test_neobert_export_passes_every_check(neobert_dir: Path, cli: Any) -> None:
    code, checks = validate(cli, neobert_dir)
    assert code == 0, checks
    for name in ("load", "tokenizer", "custom code", "init warnings", "fill-mask", "attention-mask parity",
                 "padding invariance"):
        assert checks[name]["status"] == "pass", checks[name]
    # random weights: the similarity check says why it cannot judge them rather than failing or passing
    assert checks["similarity"]["status"] == "skip" and "look untrained" in checks["similarity"]["detail"]


@pytest.mark.parametrize(("edit", "failing"), [
    # the mask ignored: every spelling agrees, but padding now leaks into real tokens
    (("attn_mask=key_bias,", "attn_mask=None,"), "padding invariance"),
    # an additive mask read as a keep-mask: its 0s drop the real tokens
    (("if attention_mask.is_floating_point():", "if False:"), "attention-mask parity"),
])
def test_neobert_checks_fail_on_broken_mask_handling(neobert_dir: Path, tmp_path: Path, edit: tuple[str, str], failing: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(neobert_dir, broken)
    code_file = broken / "modeling_neobert.py"
    text = code_file.read_text()
    assert edit[0] in text
    code_file.write_text(text.replace(*edit))
    ok, checks = validate_here(broken)
    assert not ok and checks[failing] == "fail", checks


def test_neobert_missing_weight_fails_load_and_init_warnings(neobert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(neobert_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layer_norm.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    ok, checks = validate_here(broken)
    assert not ok and checks["load"] == "fail" and checks["init warnings"] == "fail"


def test_nanomoe_export_passes_every_check(tmp_path: Path, cli: Any) -> None:
    save_ckpt(tmp_path / "out" / "ckpt.pt", MIXED, 8)
    folder = pyconv.convert(tmp_path / "out" / "ckpt.pt", tmp_path / "hf", to="hf", progress=False).output
    code, checks = validate(cli, folder)
    assert code == 0, checks
    for name in ("load", "custom code", "init warnings", "attention mask", "tuple outputs", "generate", "save_pretrained"):
        assert checks[name]["status"] == "pass", checks[name]
