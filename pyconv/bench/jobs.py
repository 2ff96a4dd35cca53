"""Conversion throughput and peak RSS of pyconv against `cp` and the usual tools, in one run.

Inputs are synthetic LLaMA-shaped bf16 checkpoints (synth.py) kept in the data folder and reused.
Every contender reads the same warm page cache and is timed until its output is on disk (harness.py);
outputs are deleted and flushed between runs. `cp` of the shards is every run's first row: the limit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from ..errors import ConversionError
from .harness import Measurement, best_of, files_in, markdown_table, remove, total_size
from .synth import SHAPES, ensure_checkpoint

PY = sys.executable
# the row every other is compared with: copying the shards, flushed to disk like every row
BASELINE = "cp + sync"


class Job(NamedTuple):
    """One row of the table: a contender's command and what the row says about it."""

    label: str
    cmd: list[str]
    note: str
    describe: Callable[[], str] | None = None  # what the output came to, appended to the note after a success
    inputs: list[Path] | None = None           # the files it reads, when not the synthetic checkpoint's shards


def threads_label(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def pyconv_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [PY, "-m", "pyconv", "convert", str(src), "-o", str(out), "-q", *extra]


def safetensors_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    out = work / "out"
    jobs: list[Job] = []
    for n in threads:
        jobs.append(Job(f"pyconv bf16→f16 safetensors, {threads_label(n)}",
                     pyconv_cmd(src, out, "--to", "safetensors", "--outtype", "f16", "--threads", str(n)),
                     "fsyncs its output"))
    jobs.append(Job("safetensors load + torch cast + save", [PY, "-m", "pyconv.bench.python_way", str(src), str(out), "float16"],
                 "one shard at a time"))
    return jobs


def gguf_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    from .reference import reference_converter

    ref = reference_converter(work.parent)
    jobs: list[Job] = []
    for outtype in ("f16", "q8_0"):
        out = work / "out" / f"model-{outtype}.gguf"
        for n in threads:
            jobs.append(Job(f"pyconv → GGUF {outtype}, {threads_label(n)}",
                         pyconv_cmd(src, out, "--outtype", outtype, "--threads", str(n)),
                         "includes fsync, sha256 of the output"))
        jobs.append(Job(f"pyconv → GGUF {outtype}, {threads_label(threads[-1])}, no sidecars",
                     pyconv_cmd(src, out, "--outtype", outtype, "--threads", str(threads[-1]), "--no-fingerprint"),
                     "the same without the .sha256/.meta.json fingerprints"))
        if outtype == "f16":  # what the opt-in input fingerprints cost, once
            jobs.append(Job(f"pyconv → GGUF {outtype}, {threads_label(threads[-1])}, --hash-inputs",
                         pyconv_cmd(src, out, "--outtype", outtype, "--threads", str(threads[-1]), "--hash-inputs"),
                         "the same plus the sha256 of every input file in .meta.json"))
        jobs.append(Job(f"convert_hf_to_gguf.py → GGUF {outtype}", [PY, str(ref), str(src), "--outfile", str(out), "--outtype", outtype],
                     "llama.cpp's converter, same checkpoint"))
    return jobs


def ternary_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    jobs: list[Job] = []
    for outtype in ("tq2_0", "i2_s"):
        out = work / "out" / f"model-{outtype}.gguf"
        cmd = pyconv_cmd(src, out, "--outtype", outtype, "--ternarize", "absmean", "--threads", str(threads[-1]))
        jobs.append(Job(f"pyconv → GGUF {outtype} (absmean), {threads_label(threads[-1])}", cmd,
                     "two passes over the projections: mean |W|, then pack; sha256 of the output"))
        # the difference between the two rows is what the output's sha256 and the sidecars cost
        jobs.append(Job(f"pyconv → GGUF {outtype} (absmean), {threads_label(threads[-1])}, no sidecars", [*cmd, "--no-fingerprint"],
                     "the same without the .sha256/.meta.json fingerprints"))
    return jobs


def zstd_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    """GGUF F16 alone and with a .zst beside it: what compressing a CI artifact costs and saves."""
    out = work / "out" / "model-f16.gguf"
    packed = out.with_name(out.name + ".zst")
    cmd = pyconv_cmd(src, out, "--outtype", "f16", "--threads", str(threads[-1]))

    def sizes() -> str:
        gguf_bytes = out.stat().st_size
        if not packed.exists():
            return f"{gguf_bytes / 1e9:.2f} GB .gguf"
        return f"{gguf_bytes / 1e9:.2f} GB .gguf, {packed.stat().st_size / 1e9:.2f} GB .zst ({packed.stat().st_size / gguf_bytes:.0%})"

    return [Job(f"pyconv → GGUF f16, {threads_label(threads[-1])}", cmd, "includes fsync, sha256 of the output", sizes),
            Job(f"pyconv → GGUF f16 + .zst, {threads_label(threads[-1])}", [*cmd, "--compress", "zstd"],
             "the same, then zstd level 3 on as many threads, streamed, with its own sha256", sizes)]


def dcp_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    """The checkpoint saved by 2 ranks as a PyTorch Distributed Checkpoint, to safetensors: pyconv against
    torch's dcp_to_torch_save, both until the output is on disk."""
    from .dcp import ensure_dcp

    ckpt = ensure_dcp(src, work.parent)
    files = sorted(p for p in ckpt.iterdir() if p.suffix == ".distcp" or p.name == ".metadata")
    out = work / "out"
    jobs = [Job(f"pyconv DCP → safetensors, {threads_label(n)}",
                pyconv_cmd(ckpt, out / "model.safetensors", "--to", "safetensors", "--threads", str(n)),
                "chunks read in place from the rank files; includes fsync", inputs=files) for n in threads]
    reference = f"{PY} -m pyconv.bench.dcp to-torch-save {ckpt} {out} && sync"
    jobs.append(Job("dcp_to_torch_save + safetensors save + sync", ["sh", "-c", reference],
                    "torch's own: the whole state dict in memory", inputs=files))
    return jobs


def llama_quantize() -> str:
    """llama.cpp's llama-quantize: $PYCONV_LLAMA_QUANTIZE, else the one on PATH (``make bench`` puts the
    one ``make llama-tools`` builds there)."""
    tool = os.environ.get("PYCONV_LLAMA_QUANTIZE") or shutil.which("llama-quantize")
    if tool is None:
        raise ConversionError("the kquants job needs llama.cpp's llama-quantize: build it with `make llama-tools`, "
                              "or name it in PYCONV_LLAMA_QUANTIZE")
    return tool


def f16_gguf(src: Path, data: Path) -> Path:
    """An F16 GGUF of the checkpoint, made once by pyconv and kept: what llama-quantize alone starts from."""
    f16 = data / f"{src.name}-f16.gguf"
    if not f16.exists():
        subprocess.run(pyconv_cmd(src, f16, "--outtype", "f16", "--no-fingerprint"), check=True)
    return f16


def kquants_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[Job]:
    """Q4_K_M three ways: pyconv in one pass from the checkpoint; llama.cpp's two steps (its converter to
    an F16 GGUF, then llama-quantize); llama-quantize alone from an F16 GGUF that is already there."""
    from .reference import reference_converter

    ref, tool = reference_converter(work.parent), llama_quantize()
    f16 = f16_gguf(src, work.parent)
    out = work / "out" / "model-q4_k_m.gguf"
    step = work / "out" / "model-f16.gguf"
    jobs: list[Job] = []
    for n in threads:
        label = threads_label(n)
        jobs.append(Job(f"pyconv → GGUF q4_k_m, {label}", pyconv_cmd(src, out, "--outtype", "q4_k_m", "--threads", str(n)),
                        "one pass from the checkpoint; includes fsync, sha256 of the output"))
        two_steps = f"{PY} {ref} {src} --outfile {step} --outtype f16 && {tool} {step} {out} Q4_K_M {n}"
        jobs.append(Job(f"convert_hf_to_gguf.py → F16, then llama-quantize → Q4_K_M, {label}", ["sh", "-c", two_steps],
                        "the two-step way; the F16 file stays on disk as well"))
        jobs.append(Job(f"llama-quantize F16 GGUF → Q4_K_M, {label}", [tool, str(f16), str(out), "Q4_K_M", str(n)],
                        "llama.cpp's quantizer alone, from an F16 GGUF made beforehand", inputs=[f16]))
    return jobs


def copy_job(shards: list[Path], out: Path) -> Job:
    return Job(BASELINE, ["cp", *map(str, shards), str(out)], "copy of the shards")


JOBS: dict[str, Callable[[Path, list[Path], Path, list[int]], Sequence[Job]]] = {
    "safetensors": safetensors_jobs,
    "gguf": gguf_jobs,
    "ternary": ternary_jobs,
    "zstd": zstd_jobs,
    "dcp": dcp_jobs,
    "kquants": kquants_jobs,
}
# the jobs that write GGUF files, which need a tokenizer
TOKENIZED = ("gguf", "ternary", "zstd", "kquants")


def add_tokenizer(src: Path, data: Path, tokenizer: Path | None = None) -> None:
    """GGUF needs a tokenizer: ``tokenizer`` (a tokenizer.json or the folder holding it) or, by
    default, SmolLM2's 49152-token one, which every synthetic shape's vocabulary is sized for."""
    if tokenizer is None:
        if (src / "tokenizer.json").exists():
            return
        from ..demo import smollm2_hf

        tokenizer = smollm2_hf(data / "smollm2-hf-f32")
    folder = tokenizer if tokenizer.is_dir() else tokenizer.parent
    if not (folder / "tokenizer.json").is_file():
        raise ConversionError("holds no tokenizer.json for the GGUF jobs", file=folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, src / name)


def run(size: str, jobs: list[str], threads: list[int], rounds: int, data: Path,
        tokenizer: Path | None = None) -> tuple[list[Measurement], Path]:
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        raise ConversionError(f"unknown benchmark job {', '.join(unknown)}; jobs are {', '.join(JOBS)}")
    print(f"checkpoint: {size} in {data} (generated on first use, then reused)", file=sys.stderr, flush=True)
    src, shards = ensure_checkpoint(size, data)
    if any(j in TOKENIZED for j in jobs):
        add_tokenizer(src, data, tokenizer)
    work = data / "work"
    remove(work)
    work.mkdir(parents=True)
    contenders = [copy_job(shards, work / "out"), *(r for job in jobs for r in JOBS[job](src, shards, work, threads))]
    results = [best_of(rounds, r.label, r.cmd, inputs=r.inputs or shards, out=work / "out", note=r.note, describe=r.describe)
               for r in contenders]
    remove(work)
    return results, src


def report(results: list[Measurement], src: Path, size: str, rounds: int, command: str, as_json: bool) -> str:
    shape = SHAPES[size]
    input_bytes = total_size(files_in(src))
    if as_json:
        return json.dumps({"input": str(src), "parameters": shape.params, "input_bytes": input_bytes,
                           "rounds": rounds, "command": command, "runs": [asdict(m) | {"gbps": m.gbps} for m in results]},
                          indent=2)
    return (f"Input: {src.name}, {shape.params / 1e9:.2f} B parameters, {input_bytes / 1e9:.2f} GB; "
            f"{platform.processor() or platform.machine()}, best of {rounds}, warm page cache, every row until its "
            f"output is on disk (the command, then sync).\n\n"
            f"{markdown_table(results, baseline=BASELINE)}\n\n"
            f"Command: {command}")
