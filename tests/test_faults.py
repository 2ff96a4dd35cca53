"""Faults while writing safetensors files, GGUF files and HF folders: a full filesystem (a real small
tmpfs, mounted in a private mount namespace), a file-size limit, and Ctrl-C mid-write. Each leaves
nothing behind and exits non-zero with one clear line; an existing output is replaced only with
--force and only by a complete one, so a failed --force run keeps it byte for byte. Every test checks
that the inputs' checksums did not change."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyconv

from .conftest import file_digests, start_interruptible
from .corpus import Workshop, tiny_llama

# (output name, extra arguments) per target
TARGETS = {"safetensors": ("out.safetensors", ["--outtype", "f16"]), "gguf": ("out.gguf", ["--outtype", "f16"]),
           "hf": ("out", ["--to", "hf", "--outtype", "f16"])}
# outputs of several files: posix_fallocate reserves each file's space when it is created, so only these
# can run out of space after the first bytes are written
SEVERAL_FILES = {"shards": ("out", ["--to", "safetensors", "--max-shard-size", "60MB", "--outtype", "f16"]),
                 "gguf": TARGETS["gguf"], "hf": TARGETS["hf"]}
SLOW = ["--threads", "1", "--chunk-size", "4KiB", "-q"]  # small chunks on one thread leave time to interrupt
PAGE = 4096


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaMA-shaped f32 checkpoint of about 200 MB with its config and a SentencePiece tokenizer."""
    root = tmp_path_factory.mktemp("faults")
    return tiny_llama(Workshop(root / "w", root / "shared"), size={"hidden_size": 1024, "intermediate_size": 2816,
                                                                   "num_hidden_layers": 4, "num_attention_heads": 8,
                                                                   "num_key_value_heads": 8})


@pytest.fixture(autouse=True)
def inputs_unchanged(model: Path) -> Any:
    before = file_digests(model)
    yield
    assert file_digests(model) == before


def convert_cmd(model: Path, out: Path, target: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pyconv", "convert", str(model), "-o", str(out), *{**TARGETS, **SEVERAL_FILES}[target][1], *extra]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def old_output(folder: Path, target: str) -> Path:
    """What a user had at the output path before: a file, or a folder with a file."""
    out = folder / TARGETS[target][0]
    if target == "hf":
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"the previous export")
    else:
        out.write_bytes(b"the previous output")
    return out


def output_bytes(model: Path, target: str, tmp: Path) -> int:
    """Bytes the conversion writes before its late sidecars (what the up-front space check counts)."""
    options: dict[str, Any] = {"gguf": {}, "hf": {"to": "hf"}, "shards": {"to": "safetensors", "max_shard_size": 60_000_000}}[target]
    result = pyconv.convert(model, tmp / SEVERAL_FILES[target][0], outtype="f16", dry_run=True, progress=False, **options)
    return int(result.bytes_written)


# --- a real full filesystem ----------------------------------------------------------------------

# Runs inside a private mount namespace: mounts a tmpfs of the given size, puts the previous output there
# if asked, converts into it and reports what the filesystem holds afterwards (it is gone once this exits).
SMALL_FS = r"""
import hashlib, json, shutil, subprocess, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
where = Path(spec["dir"])
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size']}", "tmpfs", str(where)], check=True)
if spec["old"]:
    old = Path(spec["old"])
    (shutil.copytree if old.is_dir() else shutil.copy)(old, where / old.name)
run = subprocess.run(spec["cmd"], capture_output=True, text=True, timeout=300)
files = {str(p.relative_to(where)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(where.rglob("*")) if p.is_file()}
entries = sorted(str(p.relative_to(where)) for p in where.rglob("*"))
print(json.dumps({"rc": run.returncode, "stderr": run.stderr, "files": files, "entries": entries}))
"""


def on_small_fs(tmp_path: Path, size: int, cmd: list[str], old: Path | None = None) -> dict[str, Any]:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    # as root a private mount namespace is enough; otherwise a user namespace makes us its root
    unshare = ["unshare", "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    spec = {"dir": str(mount_point), "size": size, "cmd": [c.replace(str(tmp_path / "fs-out"), str(mount_point)) for c in cmd],
            "old": str(old) if old else None}
    r = subprocess.run([*unshare, sys.executable, "-c", SMALL_FS, json.dumps(spec)], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(mount_point.iterdir())  # the tmpfs was never visible out here
    return dict(json.loads(r.stdout))


@pytest.mark.parametrize("target", list(TARGETS))
def test_too_small_filesystem_is_refused_before_writing(model: Path, tmp_path: Path, target: str) -> None:
    out = tmp_path / "fs-out" / TARGETS[target][0]
    seen = on_small_fs(tmp_path, 1 << 20, convert_cmd(model, out, target, "-q"))
    assert seen["rc"] == 1
    line = one_line(seen["stderr"])
    assert line.startswith("pyconv: error: ") and "not enough disk space: the output needs" in line
    assert seen["entries"] == []


@pytest.mark.parametrize("target", list(SEVERAL_FILES))
def test_filesystem_filling_up_mid_conversion_leaves_nothing(model: Path, tmp_path: Path, target: str) -> None:
    """The tmpfs holds the planned bytes but not every file of them rounded up to whole pages, nor the
    sidecars written after them (fingerprints, model card): the disk fills after the first file's bytes."""
    size = -(-output_bytes(model, target, tmp_path) // PAGE) * PAGE
    out = tmp_path / "fs-out" / SEVERAL_FILES[target][0]
    seen = on_small_fs(tmp_path, size, convert_cmd(model, out, target, "-q"))
    assert seen["rc"] == 1, seen
    line = one_line(seen["stderr"])
    assert line.startswith(f"pyconv: error: {tmp_path / 'fs'}/") and "No space left on device" in line, line
    assert ".pyconv-" not in line  # named as the user would have seen it, not by its temporary name
    assert seen["entries"] == []


@pytest.mark.parametrize("target", list(SEVERAL_FILES))
def test_full_filesystem_keeps_the_previous_output_with_force(model: Path, tmp_path: Path, target: str) -> None:
    (tmp_path / "before").mkdir()
    old = old_output(tmp_path / "before", "hf" if target == "shards" else target)
    size = -(-output_bytes(model, target, tmp_path) // PAGE) * PAGE + PAGE  # and the page the old output takes
    out = tmp_path / "fs-out" / SEVERAL_FILES[target][0]
    seen = on_small_fs(tmp_path, size, convert_cmd(model, out, target, "-q", "--force"), old=old)
    assert seen["rc"] == 1, seen
    assert "No space left on device" in one_line(seen["stderr"])
    assert seen["files"] == file_digests(tmp_path / "before")


# --- a file-size limit ---------------------------------------------------------------------------

def limit_file_size() -> None:  # the kernel refuses writes past the limit as a full disk would
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000_000, 50_000_000))


@pytest.mark.parametrize("target", list(TARGETS))
def test_file_size_limit_leaves_nothing(model: Path, tmp_path: Path, target: str) -> None:
    out = tmp_path / TARGETS[target][0]
    r = subprocess.run(convert_cmd(model, out, target, "-q"), capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert line.startswith("pyconv: error: ") and "File too large" in line
    assert listing(tmp_path) == []


# --- Ctrl-C --------------------------------------------------------------------------------------

def interrupt_mid_write(cmd: list[str], parent: Path, writing: str = "pyconv") -> subprocess.CompletedProcess[str]:
    """Start ``cmd``, wait until it writes a temporary file in ``parent`` whose name holds ``writing``, then
    press Ctrl-C."""
    before = set(os.listdir(parent))
    proc = start_interruptible(cmd)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not any(
            "pyconv" in n and writing in n for n in set(os.listdir(parent)) - before):
        time.sleep(0.002)
    assert proc.poll() is None, "the conversion ended before it could be interrupted"
    if writing == "pyconv":
        time.sleep(0.05)  # well inside the engine's run: it writes for seconds at this chunk size
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("target", list(TARGETS))
def test_ctrl_c_mid_write_leaves_nothing(model: Path, tmp_path: Path, target: str) -> None:
    r = interrupt_mid_write(convert_cmd(model, tmp_path / TARGETS[target][0], target, *SLOW), tmp_path)
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr) == "pyconv: interrupted; no output was written"
    assert listing(tmp_path) == []


def test_ctrl_c_while_compressing_leaves_nothing(model: Path, tmp_path: Path) -> None:
    """Ctrl-C after the engine, while the finished file streams into its .zst."""
    cmd = convert_cmd(model, tmp_path / "out.gguf", "gguf", "--threads", "1", "-q", "--compress", "zstd", "--no-fingerprint")
    r = interrupt_mid_write(cmd, tmp_path, writing=".zst.")
    assert r.returncode == 130, r.stderr
    assert one_line(r.stderr) == "pyconv: interrupted; no output was written"
    assert listing(tmp_path) == []


@pytest.mark.parametrize("target", list(TARGETS))
def test_ctrl_c_keeps_the_previous_output_with_force(model: Path, tmp_path: Path, target: str) -> None:
    old = old_output(tmp_path, target)
    before = file_digests(tmp_path)
    r = interrupt_mid_write(convert_cmd(model, old, target, *SLOW, "--force"), tmp_path)
    assert r.returncode == 130, r.stderr
    assert file_digests(tmp_path) == before and listing(tmp_path) == listing_of(old, tmp_path)


def listing_of(old: Path, parent: Path) -> list[str]:
    return sorted([str(old.relative_to(parent)), *(str(p.relative_to(parent)) for p in old.rglob("*"))])


# --- replacing an existing output ----------------------------------------------------------------

@pytest.mark.parametrize("target", list(TARGETS))
def test_existing_output_is_replaced_only_with_force_and_only_whole(model: Path, tmp_path: Path, target: str) -> None:
    old = old_output(tmp_path, target)
    before = file_digests(tmp_path)
    r = subprocess.run(convert_cmd(model, old, target, "-q"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "already exists; pass --force to replace it" in one_line(r.stderr)
    assert file_digests(tmp_path) == before
    r = subprocess.run(convert_cmd(model, old, target, "-q", "--force"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not any("pyconv" in n for n in listing(tmp_path))
    # the replacement is a whole output that its format's own reader takes
    if target == "gguf":
        import gguf

        assert len(gguf.GGUFReader(old).tensors) == 3 + 9 * 4
    else:
        from safetensors.numpy import load_file

        got = load_file(old / "model.safetensors" if target == "hf" else old)
        assert got["model.layers.3.mlp.down_proj.weight"].dtype == np.float16 and len(got) == 3 + 9 * 4
