"""pyconv at real model sizes on a small machine: 1B, 3B and 7B LLaMA-shaped bf16 checkpoints,
converted to GGUF (F16, Q8_0, TQ2_0) and HF safetensors, against `cp` and llama.cpp's converter,
and under a hard memory cap; writes Markdown tables, a JSON record and the plots in docs/img/.

    python -m benchmarks.scale --sizes 1b,3b,7b --cap 1GB
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

from pyconv.bench.harness import Measurement, best_of, markdown_table, memory_cap, remove
from pyconv.bench.jobs import BASELINE, PY, add_tokenizer, copy_job, pyconv_cmd
from pyconv.bench.reference import reference_converter
from pyconv.bench.synth import SHAPES, ensure_checkpoint
from pyconv.units import parse_size

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench-data"
IMG = ROOT / "docs" / "img"

PYCONV_NOTE = "fsync; sha256 of the output"
# best of two: on this VM a writer allocating pages just freed elsewhere ran up to 2× slower once
ROUNDS = 2
# a capped run that thrashes instead of being killed is stopped and reported as unfinished
CAPPED_TIMEOUT_S = 900


def one(label: str, cmd: list[str], shards: list[Path], out: Path, note: str = "", cgroup: Path | None = None) -> Measurement:
    return best_of(ROUNDS, label, cmd, inputs=shards, out=out, note=note, cgroup=cgroup,
                   timeout=CAPPED_TIMEOUT_S if cgroup is not None else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1b,3b,7b")
    ap.add_argument("--cap", default="1GB", help="memory cap for the capped runs (cgroup)")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints (13.8 GB for 7b)")
    args = ap.parse_args(argv)
    sizes = args.sizes.split(",")
    cap = parse_size(args.cap)
    ref = reference_converter(DATA)
    out = DATA / "work" / "scale-out"

    def reference(src: Path, outtype: str) -> list[str]:
        return [PY, str(ref), str(src), "--outfile", str(out / "m.gguf"), "--outtype", outtype]

    results: dict[str, list[Measurement]] = {}
    for size in sizes:
        print(f"{size}: generating or reusing the checkpoint", file=sys.stderr, flush=True)
        src, shards = ensure_checkpoint(size, DATA)
        add_tokenizer(src, DATA)
        rows = [
            one(BASELINE, copy_job(shards, out).cmd, shards, out, "copy of the shards"),
            one("pyconv → GGUF f16", pyconv_cmd(src, out / "m.gguf", "--outtype", "f16"), shards, out, PYCONV_NOTE),
            one("convert_hf_to_gguf.py → GGUF f16", reference(src, "f16"), shards, out),
        ]
        if size == sizes[-1]:
            rows += [
                one("pyconv → GGUF q8_0", pyconv_cmd(src, out / "m.gguf", "--outtype", "q8_0"), shards, out, PYCONV_NOTE),
                one("pyconv → GGUF tq2_0 (absmean)", pyconv_cmd(src, out / "m.gguf", "--outtype", "tq2_0", "--ternarize", "absmean"),
                    shards, out, PYCONV_NOTE),
                one("pyconv → HF safetensors f16", pyconv_cmd(src, out / "hf", "--to", "hf", "--outtype", "f16"), shards, out,
                    "fsync; sha256 of the outputs in the model card"),
                one("convert_hf_to_gguf.py → GGUF q8_0", reference(src, "q8_0"), shards, out),
            ]
            with memory_cap(cap) as group:
                rows += [
                    one(f"pyconv → GGUF f16 under a {args.cap} cap", pyconv_cmd(src, out / "m.gguf", "--outtype", "f16"), shards, out,
                        PYCONV_NOTE, cgroup=group),
                    one(f"convert_hf_to_gguf.py → GGUF f16 under a {args.cap} cap", reference(src, "f16"), shards, out,
                        cgroup=group),
                ]
        results[size] = rows
        if not args.keep and size != sizes[-1]:
            remove(src)
    record = DATA / "scale-results.json"
    record.write_text(json.dumps({s: [asdict(m) for m in ms] for s, ms in results.items()}, indent=2))
    plot(results)
    for size, rows in results.items():
        params = SHAPES[size].params
        print(f"\n### {size}: {params / 1e9:.2f} B parameters, {rows[0].input_bytes / 1e9:.2f} GB bf16\n")
        print(markdown_table(rows, baseline=BASELINE))
    print(f"\n{platform.machine()}, {len(os.sched_getaffinity(0))} cores, warm page cache, best of {ROUNDS}, every row until "
          f"its output is on disk (the command, then sync); "
          f"command: python -m benchmarks.scale --sizes {args.sizes} --cap {args.cap}")
    return 0


def plot(results: dict[str, list[Measurement]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    largest = list(results)[-1]
    rows = [m for m in results[largest] if m.ok]
    for field, title, name, scale in (("gbps", f"throughput at {largest} (GB/s of bf16 input)", "throughput.png", 1.0),
                                      ("peak_rss", f"peak RSS at {largest} (MB)", "memory.png", 1e-6)):
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
        values = [getattr(m, field) * scale for m in rows]
        ax.barh([m.label for m in rows], values, color=["#4c72b0" if m.label.startswith("pyconv") else "#999999" for m in rows])
        ax.invert_yaxis()
        ax.set_title(title)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}" if scale == 1.0 else f" {v:.0f}", va="center")
        fig.tight_layout()
        fig.savefig(IMG / name, dpi=110)
        plt.close(fig)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    params = [SHAPES[s].params / 1e9 for s in results]
    for label, style in (("pyconv → GGUF f16", "o-"), ("convert_hf_to_gguf.py → GGUF f16", "s--")):
        ms = [next(m for m in results[s] if m.label == label) for s in results]
        a1.plot(params, [m.wall_s for m in ms], style, label=label)
        a2.plot(params, [m.peak_rss / 1e6 for m in ms], style, label=label)
    a1.set(xlabel="parameters (billions)", ylabel="wall seconds", title="time vs model size")
    a2.set(xlabel="parameters (billions)", ylabel="peak RSS (MB)", title="peak memory vs model size")
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "scaling.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
