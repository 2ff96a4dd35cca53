"""DeepSpeed ZeRO → safetensors: pyconv against DeepSpeed's own ``zero_to_fp32 --safe_serialization``.

    .venv/bin/python -m benchmarks.zero [--size 300m|1b] [--rounds 3]

The input is a real checkpoint: a Llama of pyconv.bench.synth's "300m" (0.32 B parameters) or "1b"
(1.17 B) shape trained one step by DeepSpeed on CPU with ZeRO-2, bf16, world size 2
(tests/zero_fixtures/make_checkpoints.py under torchrun), cached under bench-data/. The two tools run
interleaved on a warm page cache; the table gives medians of wall time, CPU time and peak RSS, and the
outputs are compared bit for bit.

Training needs every rank to hold the whole bf16 model, its gradients and its share of the fp32
master weights and optimizer states: with AdamW about 20 bytes per parameter over both ranks. On a
24 GB machine that is the 300m run; the 1b run fits only built in bf16 and trained with SGD (no
optimizer states; the fp32 master weights pyconv reads are there all the same). LLaMA-2-7B shapes
would need 28 GB for the two bf16 copies alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from pyconv.bench.harness import Measurement, files_in, markdown_table, measure, remove, total_size, warm_page_cache
from pyconv.bench.synth import SHAPES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench-data" / "zero"
GENERATOR = ROOT / "tests" / "zero_fixtures" / "make_checkpoints.py"
PY = sys.executable


def run_spec(size: str) -> dict[str, object]:
    shape = SHAPES[size]
    spec: dict[str, object] = {
        "name": f"llama-{size}-zero2-ws2-bf16", "stage": 2, "dtype": "bf16", "model": "llama", "steps": 1, "references": False,
        "sizes": {"vocab_size": shape.vocab, "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
                  "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
                  "num_key_value_heads": shape.kv_heads, "max_position_embeddings": 2048, "tie_word_embeddings": False},
        # DeepSpeed's default buckets (5e8 elements) would add 1 GB per rank for nothing here
        "zero": {"reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000},
    }
    if size != "300m":
        spec |= {"optimizer": "sgd", "init_dtype": "bf16"}
    return spec


DS_ENV = {"DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore"}


def ensure_checkpoint(spec: dict[str, object]) -> Path:
    """The checkpoint folder (with ``latest``), trained and saved by DeepSpeed on first use."""
    folder = DATA / str(spec["name"])
    done = folder / ".complete"
    if done.exists() and json.loads(done.read_text()) == spec:
        return folder / "ckpt"
    remove(folder)
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"training and saving {spec['name']} with DeepSpeed (minutes, up to ~16 GB of RAM)...", file=sys.stderr)
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", str(GENERATOR),
           "--out", str(DATA), json.dumps(spec)]
    subprocess.run(cmd, check=True, env={**os.environ, **DS_ENV, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    done.write_text(json.dumps(spec))
    return folder / "ckpt"


def compare(ours: Path, theirs: Path) -> str:
    """'' if both safetensors files hold the same tensors with the same bytes, else the first difference."""
    from safetensors import safe_open

    with safe_open(ours, framework="np") as a, safe_open(theirs, framework="np") as b:
        if set(a.keys()) != set(b.keys()):
            return f"names differ: {sorted(set(a.keys()) ^ set(b.keys()))[:5]}"
        for name in a:
            x, y = a.get_tensor(name), b.get_tensor(name)
            if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
                return f"'{name}' differs"
    return ""


def median(label: str, runs: list[Measurement], note: str) -> Measurement:
    ok = [m for m in runs if m.ok] or runs
    return Measurement(label, statistics.median(m.wall_s for m in ok), statistics.median(m.cpu_s for m in ok),
                       int(statistics.median(m.peak_rss for m in ok)), ok[0].input_bytes, ok[0].returncode,
                       note if ok[0].ok else ok[0].note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="300m", choices=("300m", "1b"), help="model shape (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs per tool; medians are reported")
    args = ap.parse_args(argv)
    shape = SHAPES[args.size]
    spec = run_spec(args.size)
    ckpt = ensure_checkpoint(spec)
    inputs = files_in(ckpt / (ckpt / "latest").read_text().strip())
    work = DATA / "work"
    remove(work)
    work.mkdir()
    ours, theirs = work / "pyconv.safetensors", work / "zero_to_fp32" / "model.safetensors"
    fp32_bytes = sum(n * 4 for n in (int(np.prod(s)) for _name, s in shape.tensors()))
    tools = {  # label: (command, what it writes)
        "pyconv": ([PY, "-m", "pyconv", "convert", str(ckpt), "-o", str(ours), "-q"], ours),
        "zero_to_fp32 0.19.8": ([PY, str(ckpt / "zero_to_fp32.py"), str(ckpt), str(theirs.parent), "--safe_serialization"],
                                theirs.parent),
    }
    runs: dict[str, list[Measurement]] = {label: [] for label in tools}
    warm_page_cache(inputs)
    for r in range(args.rounds):
        for label, (cmd, output) in tools.items():
            remove(output)
            m = measure(label, cmd, input_bytes=fp32_bytes, env=DS_ENV, cwd=work)
            runs[label].append(m)
            print(f"round {r + 1} {label}: {m.wall_s:.2f} s, peak RSS {m.peak_rss / 1e6:.0f} MB"
                  + ("" if m.ok else f" FAILED {m.note}"), file=sys.stderr)
    difference = compare(ours, theirs) if ours.exists() and theirs.exists() else "an output is missing"
    same = "outputs bit-identical" if not difference else f"OUTPUTS DIFFER: {difference}"
    table = [median(label, ms, same if label == "pyconv" else "") for label, ms in runs.items()]
    print(f"\nInput: DeepSpeed ZeRO-2 bf16 checkpoint, world size 2, Llama {shape.params / 1e9:.2f} B parameters"
          f" (trained with {spec.get('optimizer', 'adamw')}; {total_size(inputs) / 1e9:.2f} GB on disk; "
          f"{fp32_bytes / 1e9:.2f} GB of fp32 master weights out); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, median of {args.rounds} interleaved "
          "rounds, warm page cache. Input GB/s counts the fp32 weights written.\n")
    print(markdown_table(table, baseline="zero_to_fp32 0.19.8"))
    print(f"\nCommand: .venv/bin/python -m benchmarks.zero --size {args.size} --rounds {args.rounds}")
    remove(work)
    return 0 if not difference and all(m.ok for m in table) else 1


if __name__ == "__main__":
    raise SystemExit(main())
