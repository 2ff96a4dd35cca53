"""``--compress zstd``: a reproducible ``.zst`` beside a file output or instead of it, and ``.zst`` inputs
decompressed (streamed, into a temporary folder that goes away) and read like the file they hold."""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

import pyconv

from .conftest import file_digests, run_cli
from .corpus import Workshop, tiny_llama


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpacked(path: Path) -> bytes:
    with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as r:
        return bytes(r.read())


def compress_to(path: Path, data: bytes) -> Path:
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return path


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer LLaMA 1024 wide (about 24 MB of f32): several of zstd's 8 MB jobs."""
    root = tmp_path_factory.mktemp("zstd")
    return tiny_llama(Workshop(root / "w", root / "shared"), size={"hidden_size": 1024, "intermediate_size": 1024,
                                                                   "num_attention_heads": 8, "num_key_value_heads": 8})


def test_zst_beside_gguf_is_the_file_and_reproducible(medium: Path, tmp_path: Path) -> None:
    runs = {}
    for threads in ("1", "2"):
        out = tmp_path / threads / "model.gguf"
        out.parent.mkdir()
        r = run_cli("convert", medium, "-o", out, "--outtype", "f16", "--threads", threads, "--compress", "zstd")
        assert r.returncode == 0, r.stderr
        assert f"zstd: {out}.zst (" in r.stderr and "of model.gguf)" in r.stderr
        packed = out.with_name("model.gguf.zst")
        assert unpacked(packed) == out.read_bytes()
        assert (out.parent / "model.gguf.zst.sha256").read_text() == f"sha256-{sha256(packed)}\n"
        assert (out.parent / "model.gguf.sha256").read_text() == f"sha256-{sha256(out)}\n"
        assert zstandard.get_frame_parameters(packed.read_bytes()[:18]).content_size == out.stat().st_size
        assert packed.stat().st_size < out.stat().st_size  # f16 of normal values: the exponent bits compress
        runs[threads] = packed.read_bytes()
    assert runs["1"] == runs["2"]  # zstd's multi-threaded bytes do not depend on the number of workers


def test_compress_only_keeps_the_zst_and_the_fingerprint_of_its_content(medium: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole" / "model.gguf"
    whole.parent.mkdir()
    assert run_cli("convert", medium, "-o", whole, "--outtype", "q8_0", "-q").returncode == 0
    out = tmp_path / "only" / "model.gguf"
    out.parent.mkdir()
    r = run_cli("convert", medium, "-o", out, "--outtype", "q8_0", "--compress", "zstd", "--compress-only")
    assert r.returncode == 0, r.stderr
    assert "which is not kept" in r.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.gguf.sha256", "model.gguf.zst", "model.gguf.zst.sha256",
                                                             "model.meta.json"]
    assert unpacked(out.with_name("model.gguf.zst")) == whole.read_bytes()
    assert (out.parent / "model.gguf.sha256").read_text() == (whole.parent / "model.gguf.sha256").read_text()


def test_safetensors_file_output(medium: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    pyconv.convert(medium, out, outtype="bf16", compress="zstd", progress=False)
    assert unpacked(tmp_path / "model.safetensors.zst") == out.read_bytes()


def test_refusals_are_one_line(medium: Path, tmp_path: Path) -> None:
    cases = [(("--to", "hf", "--compress", "zstd"), tmp_path / "hf", "archive a folder output with tar --zstd"),
             (("--compress-only",), tmp_path / "m.gguf", "--compress-only needs --compress zstd")]
    for args, out, message in cases:
        r = run_cli("convert", medium, "-o", out, *args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert run_cli("convert", medium, "-o", tmp_path / "m.gguf", "--compress", "gzip").returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_zst_inputs_convert_as_what_they_hold(medium: Path, tmp_path: Path) -> None:
    """A compressed safetensors file beside its config and tokenizer, and a compressed GGUF: the outputs
    equal those of the plain files, the temporary copy is gone, the fingerprints name the .zst."""
    folder = tmp_path / "model"
    folder.mkdir()
    for p in medium.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    plain = tmp_path / "plain.gguf"
    pyconv.convert(folder / "model.safetensors", plain, outtype="f16", progress=False)
    packed = compress_to(folder / "model.safetensors.zst", (folder / "model.safetensors").read_bytes())
    (folder / "model.safetensors").unlink()
    before = file_digests(folder)
    out = tmp_path / "out" / "from-zst.gguf"
    out.parent.mkdir()
    r = run_cli("convert", packed, "-o", out, "--outtype", "f16", "-q", "--hash-inputs")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == plain.read_bytes()  # config.json and the tokenizer came from beside the .zst
    meta = json.loads((out.parent / "from-zst.meta.json").read_text())
    assert meta["sources"] == [{"file": str(packed), "bytes": packed.stat().st_size, "sha256": sha256(packed)}]
    assert sorted(p.name for p in out.parent.iterdir()) == ["from-zst.gguf", "from-zst.gguf.sha256", "from-zst.meta.json"]

    gguf_zst = compress_to(tmp_path / "plain.gguf.zst", plain.read_bytes())
    back = tmp_path / "back.safetensors"
    pyconv.convert(gguf_zst, back, progress=False)
    pyconv.convert(plain, tmp_path / "direct.safetensors", progress=False)
    assert back.read_bytes() == (tmp_path / "direct.safetensors").read_bytes()

    r = run_cli("inspect", packed, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["path"] == str(packed) and info["files"] == [str(packed)] and info["config"]["hidden_size"] == 1024
    assert file_digests(folder) == before
    assert not [p for p in tmp_path.rglob("*") if ".pyconv-" in p.name]


def test_zst_input_is_decompressed_a_chunk_at_a_time(tmp_path: Path) -> None:
    """640 MiB of tensor data from a .zst of a few hundred kilobytes, under a 512 MiB address-space cap."""
    path = tmp_path / "big.safetensors.zst"
    n = 640 << 20
    header = b'{"w": {"dtype": "U8", "shape": [%d], "data_offsets": [0, %d]}}' % (n, n)
    with path.open("wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f, size=8 + len(header) + n) as w:
        w.write(len(header).to_bytes(8, "little") + header)
        chunk = bytes(16 << 20)
        for _ in range(n // len(chunk)):
            w.write(chunk)
    assert path.stat().st_size < 1 << 20

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    r = subprocess.run([sys.executable, "-m", "pyconv", "inspect", str(path)], capture_output=True, text=True,
                       preexec_fn=capped, timeout=300, env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: safetensors, 1 tensors, 671.09 MB"), r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors.zst"]
