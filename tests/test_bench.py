"""``pyconv bench``: every job runs on the tiny shape and reports real measurements of real outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import torch
from safetensors.torch import load_file

from pyconv.bench.harness import measure, until_on_disk
from pyconv.bench.synth import SHAPES, ensure_checkpoint


def test_bench_runs_the_jobs_and_prints_one_row_per_contender(
        tmp_path: Path, smollm2_hf: Path, cli: Callable[..., CompletedProcess[str]]) -> None:
    r = cli("bench", "--size", "tiny", "--jobs", "safetensors,ternary,zstd,dcp", "--threads", "1,2", "--rounds", "1",
            "--data", tmp_path, "--tokenizer", smollm2_hf / "tokenizer.json", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    runs = {m["label"]: m for m in result["runs"]}
    assert list(runs) == [
        "cp + sync", "pyconv bf16→f16 safetensors, 1 thread", "pyconv bf16→f16 safetensors, 2 threads",
        "safetensors load + torch cast + save",
        "pyconv → GGUF tq2_0 (absmean), 2 threads", "pyconv → GGUF tq2_0 (absmean), 2 threads, no sidecars",
        "pyconv → GGUF i2_s (absmean), 2 threads", "pyconv → GGUF i2_s (absmean), 2 threads, no sidecars",
        "pyconv → GGUF f16, 2 threads", "pyconv → GGUF f16 + .zst, 2 threads",
        "pyconv DCP → safetensors, 1 thread", "pyconv DCP → safetensors, 2 threads", "dcp_to_torch_save + safetensors save + sync"]
    for m in runs.values():
        assert m["returncode"] == 0, m
        assert m["wall_s"] > 0 and m["peak_rss"] > 1 << 20 and m["gbps"] > 0
    assert result["input_bytes"] > SHAPES["tiny"].params * 2  # the shards, with their headers and config
    assert ".zst (" in runs["pyconv → GGUF f16 + .zst, 2 threads"]["note"]
    # the outputs were removed, the generated checkpoint kept for the next run and holds what it says
    assert not (tmp_path / "work").exists()
    assert (tmp_path / "llama-tiny-bf16-dcp" / "__1_0.distcp").is_file()  # saved by two ranks
    _src, shards = ensure_checkpoint("tiny", tmp_path)
    weights = load_file(shards[0])
    assert weights["model.embed_tokens.weight"].shape == (49152, 256)
    assert weights["model.norm.weight"].dtype == torch.bfloat16 and bool(torch.all(weights["model.norm.weight"] == 1))
    assert 0.018 < float(weights["model.layers.0.mlp.up_proj.weight"].float().std()) < 0.022


def test_bench_table_and_command(tmp_path: Path, cli: Callable[..., CompletedProcess[str]]) -> None:
    r = cli("bench", "--size", "tiny", "--threads", "2", "--rounds", "1", "--data", tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Input: llama-tiny-bf16, 0.03 B parameters")
    assert "| run | wall s | CPU s | peak RSS MB | input GB/s | × cp + sync | note |" in lines
    assert lines[0].endswith("warm page cache, every row until its output is on disk (the command, then sync).")
    assert any(line.startswith("| cp + sync |") for line in lines)
    assert any(line.startswith("| pyconv bf16→f16 safetensors, 2 threads |") for line in lines)
    assert lines[-1] == f"Command: pyconv bench --size tiny --jobs safetensors --threads 2 --rounds 1 --data {tmp_path}"


def test_bench_refuses_unknown_jobs_sizes_and_counts(tmp_path: Path, cli: Callable[..., CompletedProcess[str]]) -> None:
    for args, message in ((["--jobs", "safetensors,rsync"], "unknown benchmark job rsync; jobs are safetensors, gguf, ternary, zstd, dcp"),
                          (["--size", "70b"], "unknown benchmark size 70b; sizes are tiny, 300m, 1b, 3b, 7b"),
                          (["--threads", "two"], "--threads takes thread counts separated by commas, not 'two'"),
                          (["--rounds", "0"], "--rounds and every --threads count must be at least 1")):
        r = cli("bench", "--data", tmp_path, *args)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [f"pyconv: error: {message}"], r.stderr
    assert not any(tmp_path.iterdir())  # refused before generating anything


def test_a_checkpoint_made_for_another_shape_is_made_again(tmp_path: Path) -> None:
    src, shards = ensure_checkpoint("tiny", tmp_path)
    first = shards[0].stat().st_mtime_ns
    assert ensure_checkpoint("tiny", tmp_path) == (src, shards) and shards[0].stat().st_mtime_ns == first  # reused
    (src / ".complete").write_text(json.dumps({"shape": {"hidden": 1}, "shards": ["x.safetensors"]}))
    _src, again = ensure_checkpoint("tiny", tmp_path)
    assert again == shards and shards[0].stat().st_mtime_ns != first
    (src / ".complete").write_text("model-00001-of-00001.safetensors\n")  # the older record's form
    assert ensure_checkpoint("tiny", tmp_path)[1] == shards
    assert load_file(shards[0])["model.embed_tokens.weight"].shape == (49152, 256)


def test_every_contender_is_timed_until_its_sync(tmp_path: Path) -> None:
    # a stand-in sync on PATH leaves a mark: run after a command that succeeded, never after one that failed
    (tmp_path / "sync").write_text(f"#!/bin/sh\ntouch {tmp_path / 'synced'}\n")
    (tmp_path / "sync").chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    failed = measure("f", until_on_disk(["sh", "-c", "exit 3"]), input_bytes=1, env=env)
    assert failed.returncode == 3 and not (tmp_path / "synced").exists()
    done = measure("t", until_on_disk(["true"]), input_bytes=1, env=env)
    assert done.returncode == 0 and (tmp_path / "synced").exists()
