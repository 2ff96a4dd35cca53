"""Conversion throughput and peak RSS of pyconv against `cp` and the usual tools, in one run.

    python -m benchmarks.run --size 1b --jobs safetensors --threads 1,2

Inputs are synthetic LLaMA-shaped bf16 checkpoints (benchmarks/synth.py) kept under bench-data/.
Every contender reads the same warm page cache; outputs are deleted and flushed between runs.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .harness import Measurement, files_in, markdown_table, measure, remove, total_size, warm_page_cache
from .synth import SHAPES, ensure_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench-data"
PY = sys.executable
# (label, command, note[, what the output came to: appended to the note after a successful run])
Job = tuple[str, list[str], str] | tuple[str, list[str], str, Callable[[], str]]


def pyconv_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [PY, "-m", "pyconv", "convert", str(src), "-o", str(out), "-q", *extra]


def safetensors_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[tuple[str, list[str], str]]:
    out = work / "out"
    jobs = [
        ("cp", ["cp", *map(str, shards), str(out)], "copy of the shards into page cache"),
        ("cp + sync", ["sh", "-c", f"cp {' '.join(map(str, shards))} {out} && sync"], "copy, then flushed to disk"),
    ]
    for n in threads:
        jobs.append((f"pyconv bf16→f16 safetensors, {n} thread{'s' if n > 1 else ''}",
                     pyconv_cmd(src, out, "--to", "safetensors", "--outtype", "f16", "--threads", str(n)),
                     "includes fsync of the output"))
    jobs.append(("safetensors load + torch cast + save", [PY, "-m", "benchmarks.python_way", str(src), str(out), "float16"],
                 "one shard at a time"))
    return jobs


def gguf_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[tuple[str, list[str], str]]:
    from .reference import reference_converter

    ref = reference_converter(DATA)
    jobs = []
    for outtype in ("f16", "q8_0"):
        out = work / "out" / f"model-{outtype}.gguf"
        for n in threads:
            jobs.append((f"pyconv → GGUF {outtype}, {n} thread{'s' if n > 1 else ''}",
                         pyconv_cmd(src, out, "--outtype", outtype, "--threads", str(n)),
                         "includes fsync, sha256 of inputs and output"))
        jobs.append((f"convert_hf_to_gguf.py → GGUF {outtype}", [PY, str(ref), str(src), "--outfile", str(out), "--outtype", outtype],
                     "llama.cpp's converter, same checkpoint"))
    return jobs


def ternary_jobs(src: Path, shards: list[Path], work: Path, threads: list[int]) -> list[tuple[str, list[str], str]]:
    jobs = []
    for outtype in ("tq2_0", "i2_s"):
        out = work / "out" / f"model-{outtype}.gguf"
        cmd = pyconv_cmd(src, out, "--outtype", outtype, "--ternarize", "absmean", "--threads", str(threads[-1]))
        jobs.append((f"pyconv → GGUF {outtype} (absmean), {threads[-1]} threads", cmd,
                     "two passes over the projections: mean |W|, then pack; sha256 of inputs and output"))
        # sha256 runs at about 1.3 GiB/s on one core: above, hashing the input alone outlasts the conversion
        jobs.append((f"pyconv → GGUF {outtype} (absmean), {threads[-1]} threads, no sidecars", [*cmd, "--no-fingerprint"],
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

    return [(f"pyconv → GGUF f16, {threads[-1]} threads", cmd, "includes fsync, sha256 of inputs and output", sizes),
            (f"pyconv → GGUF f16 + .zst, {threads[-1]} threads", [*cmd, "--compress", "zstd"],
             "the same, then zstd level 3 on as many threads, streamed, with its own sha256", sizes)]


JOBS: dict[str, Callable[[Path, list[Path], Path, list[int]], Sequence[Job]]] = {
    "safetensors": safetensors_jobs,
    "gguf": gguf_jobs,
    "ternary": ternary_jobs,
    "zstd": zstd_jobs,
}


def add_tokenizer(src: Path) -> None:
    """GGUF needs a tokenizer: the synthetic models use SmolLM2's 49152-token one (the demo's folder)."""
    if (src / "tokenizer.json").exists():
        return
    from pyconv.demo import smollm2_hf

    hf = smollm2_hf(DATA / "smollm2-hf-f32")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf / name, src / name)


def run(size: str, jobs: list[str], threads: list[int], rounds: int) -> tuple[list[Measurement], Path]:
    src, shards = ensure_checkpoint(size, DATA)
    if any(j != "safetensors" for j in jobs):
        add_tokenizer(src)
    work = DATA / "work"
    remove(work)
    work.mkdir(parents=True)
    input_bytes = total_size(shards)
    results: list[Measurement] = []
    for job in jobs:
        for label, cmd, note, *describe in JOBS[job](src, shards, work, threads):
            best: Measurement | None = None
            for _ in range(rounds):
                remove(work / "out")
                (work / "out").mkdir()
                subprocess.run(["sync"], check=True)
                warm_page_cache(shards)
                m = measure(label, cmd, input_bytes=input_bytes, cwd=ROOT, note=note)
                if m.ok and describe:  # what the output came to, read before it is removed
                    m.note = f"{note}; {describe[0]()}"
                if best is None or (m.ok and m.wall_s < best.wall_s):
                    best = m
            assert best is not None
            results.append(best)
            print(f"{label}: {best.wall_s:.2f} s, {best.gbps:.3f} GB/s, peak RSS {best.peak_rss / 1e6:.0f} MB"
                  + ("" if best.ok else f" FAILED {best.note}"), file=sys.stderr)
            remove(work / "out")
    return results, src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1b", choices=sorted(SHAPES))
    ap.add_argument("--jobs", default="safetensors", help=f"comma-separated: {', '.join(JOBS)}")
    ap.add_argument("--threads", default="1,2", help="pyconv thread counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="runs per contender; the best is reported")
    args = ap.parse_args(argv)
    jobs = [j for j in args.jobs.split(",") if j]
    results, src = run(args.size, jobs, [int(t) for t in args.threads.split(",")], args.rounds)
    shape = SHAPES[args.size]
    print(f"\nInput: {src.name}, {shape.params / 1e9:.2f} B parameters, {total_size(files_in(src)) / 1e9:.2f} GB; "
          f"{platform.processor() or platform.machine()}, best of {args.rounds}, warm page cache.\n")
    print(markdown_table(results, baseline="cp"))
    print(f"\nCommand: python -m benchmarks.run --size {args.size} --jobs {args.jobs} --threads {args.threads} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
