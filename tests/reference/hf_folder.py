"""Export folders written by hand, and the fresh-process probe that loads them.

A folder holds what the HF exporter will write: ``config.json`` from the remote config class,
``model.safetensors`` written by the safetensors library, and the modeling files named by
the family's registered exporter (``remote_code``). The probe (``hf_probe.py``) runs in a new interpreter with the hub
offline and a private HF_HOME, so nothing cached by another run or another test can stand in for the folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import PreTrainedConfig

from pyconv import registry

PROBE = Path(__file__).with_name("hf_probe.py")


def remote_code(family: str) -> tuple[Path, ...]:
    """The modeling files HF exports of ``family`` ship, as its registered exporter lists them."""
    exporter = next(f.hf_exporter for f in registry.families() if f.name == family)
    assert exporter is not None
    return exporter.remote_code


def write_export(folder: Path, arch: str, config: PreTrainedConfig, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    for path in remote_code(arch):
        shutil.copy2(path, folder / path.name)
    return folder


def run_probe(jobs: list[dict[str, Any]], workdir: Path, timeout: float = 600) -> dict[str, dict[str, Any]]:
    request, result = workdir / "probe-request.pt", workdir / "probe-result.pt"
    torch.save(jobs, request)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(request), str(result)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir,
    )
    if proc.returncode != 0:
        raise AssertionError(f"probe process failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results: dict[str, dict[str, Any]] = torch.load(result, weights_only=False)
    return results


def job(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """One job's result; a job that raised in the probe fails the test with its traceback."""
    entry = results[name]
    if "error" in entry:
        pytest.fail(f"probe job {name!r} raised:\n{entry['error']}", pytrace=False)
    return entry


def assert_clean_load(entry: dict[str, Any]) -> None:
    info = entry["info"]
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == [], info
    assert info.get("error_msgs", []) == [], info
    assert entry["warnings"] == [], entry["warnings"]
