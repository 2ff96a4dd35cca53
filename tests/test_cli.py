"""The command line: help, exit codes, one-line errors, dry runs, and nothing partial left behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import file_digests, run_cli, save_safetensors, start_interruptible


@pytest.fixture
def model(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    save_safetensors(src / "model.safetensors", {f"w{i}": rng.standard_normal((64, 32)).astype(np.float32) for i in range(6)})
    return src


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "pyconv" in p.name)


def test_help_and_version() -> None:
    for args in (["--help"], ["convert", "--help"], ["inspect", "--help"], ["--version"]):
        r = run_cli(*args)
        assert r.returncode == 0 and "pyconv" in r.stdout
    assert "--max-shard-size" in run_cli("convert", "--help").stdout
    assert run_cli().returncode == 2
    assert run_cli("convert", "x", "-o", "y", "--bogus").returncode == 2
    assert run_cli("convert", "x", "-o", "y", "--max-shard-size", "lots").returncode == 2


def test_errors_are_one_line_with_nonzero_exit(tmp_path: Path, model: Path) -> None:
    cases = [
        (("convert", tmp_path / "missing", "-o", tmp_path / "o.safetensors"), "no such file or folder"),
        (("convert", model, "-o", tmp_path / "out"), "pass --to"),
        (("convert", model, "-o", tmp_path / "o.safetensors", "--outtype", "q8_0"), "not a safetensors type"),
        (("convert", model, "-o", model / "model.safetensors" / "o.safetensors"), "is a file, so the output cannot go below it"),
        (("inspect", tmp_path), "not a checkpoint pyconv can read"),
    ]
    for args, message in cases:
        r = run_cli(*args)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyconv: error: ") and message in lines[0], r.stderr


def test_missing_output_folders_are_made_and_removed_on_failure(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "a" / "b" / "o.safetensors"
    r = run_cli("convert", model, "-o", out, "--outtype", "f16")
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    failing = tmp_path / "c" / "d" / "o.safetensors"  # fails while writing: the folders made for it go too
    r = subprocess.run([sys.executable, "-m", "pyconv", "convert", str(model), "-o", str(failing)], capture_output=True,
                       text=True, timeout=120, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)))
    assert r.returncode == 1 and "File too large" in r.stderr and not (tmp_path / "c").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "o"
    r = run_cli("convert", model, "-o", out, "--to", "safetensors", "--outtype", "f16", "--dry-run", "--max-shard-size", "10KB")
    assert r.returncode == 0, r.stderr
    assert "w0" in r.stdout and "64×32" in r.stdout and "cast f16" in r.stdout and "disk space checked" in r.stdout
    assert "model-00001-of-00003.safetensors" in r.stdout and "model.safetensors.index.json" in r.stdout
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_is_replaced_only_with_force(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    r = run_cli("convert", model, "-o", out)
    assert r.returncode == 1 and "--force" in r.stderr and out.read_bytes() == b"keep me"
    r = run_cli("convert", model, "-o", out, "--force", "--outtype", "bf16")
    assert r.returncode == 0 and out.read_bytes()[:8] != b"keep me"
    r = run_cli("convert", model, "-o", model / "model.safetensors", "--force")
    assert r.returncode == 1 and "would replace the input" in r.stderr
    assert leftovers(tmp_path) == [] and leftovers(model) == []


def test_inputs_are_never_modified(tmp_path: Path, model: Path) -> None:
    before = file_digests(model)
    assert run_cli("convert", model, "-o", tmp_path / "a", "--to", "safetensors", "--outtype", "bf16").returncode == 0
    assert run_cli("inspect", model).returncode == 0
    assert file_digests(model) == before


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    src = tmp_path / "big"
    src.mkdir()
    rng = np.random.default_rng(1)
    block = rng.standard_normal((1024, 1024)).astype(np.float32)
    save_safetensors(src / "model.safetensors", {f"w{i}": block for i in range(48)})  # 200 MB
    return src


def test_ctrl_c_leaves_nothing_and_exits_130(tmp_path: Path, big_model: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pyconv", "convert", str(big_model), "-o", str(out), "--to", "safetensors",
           "--outtype", "f16", "--threads", "1", "--chunk-size", "4KiB"]
    proc = start_interruptible(cmd)
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # wait until the engine is writing into its staging folder
    assert proc.poll() is None, "conversion finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists() and leftovers(tmp_path) == []


def test_disk_full_leaves_nothing(tmp_path: Path, big_model: Path) -> None:
    out = tmp_path / "o.safetensors"

    def limit_file_size() -> None:  # a file-size cap hits the output exactly like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000_000, 50_000_000))

    r = subprocess.run([sys.executable, "-m", "pyconv", "convert", str(big_model), "-o", str(out)],
                       capture_output=True, text=True, preexec_fn=limit_file_size, timeout=120)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "File too large" in r.stderr
    assert not out.exists() and leftovers(tmp_path) == []
    assert os.listdir(big_model) == ["model.safetensors"]
