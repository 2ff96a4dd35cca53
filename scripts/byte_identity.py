"""Shows that two commits of pyconv write the same bytes: the demo model (SmolLM2-135M as a float32 HF
folder) and a synthetic Llama checkpoint, converted to every target at every out type by each commit.

    .venv/bin/python scripts/byte_identity.py --before 9be3a10 [--after HEAD] [--work DIR]

Each commit is taken from git (``git archive``), built into a virtual environment of its own that
borrows this environment's dependencies, and run through its command line on the same inputs. For
every case the outcome must match: the exit status, and for a success every file written, byte for
byte. A ``.meta.json`` is compared as data without its ``created`` time (when it was written). Exit
status 0 when everything matches; every difference is listed.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from pyconv.bench.synth import LlamaShape, write_checkpoint
from pyconv.demo import smollm2_hf

REPO = Path(__file__).resolve().parent.parent
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "i2_s")
FLOAT_TYPES = ("f32", "f16", "bf16")
# Rows of 256 elements, so every type's blocks fit, and SmolLM2's vocabulary, whose tokenizer it gets
SYNTH_SHAPE = LlamaShape(hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, vocab=49152)
TERNARY_TYPES = ("tq1_0", "tq2_0", "i2_s")


@dataclass(frozen=True)
class Case:
    source: str
    to: str
    outtype: str
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "-".join((self.source, self.to, self.outtype, *(a.strip("-") for a in self.extra)))

    def output(self, root: Path) -> Path:
        return root / self.name / ("model.gguf" if self.to == "gguf" else "model.safetensors" if self.to == "safetensors" else "out")


def cases() -> list[Case]:
    out: list[Case] = []
    for source in ("smollm2", "synth"):
        out += [Case(source, "gguf", t, ("--ternarize", "absmean") if t in TERNARY_TYPES else ()) for t in GGUF_TYPES]
        out += [Case(source, "safetensors", t) for t in FLOAT_TYPES]
        out += [Case(source, "hf", t) for t in FLOAT_TYPES]
    out.append(Case("synth", "gguf", "q8_0", ("--split-max-size", "1M")))
    out.append(Case("synth", "safetensors", "bf16", ("--compress", "zstd")))
    return out


def build(rev: str, work: Path) -> Path:
    """A virtual environment holding ``rev``'s pyconv, built from its sources; its dependencies are this one's."""
    env = work / f"env-{rev}"
    python = env / "bin" / "python"
    if not python.exists():
        make_env(rev, work, env)
    where = subprocess.run([str(python), "-c", "import pyconv._core, pyconv; print(pyconv.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(env)):
        raise SystemExit(f"{env} imports pyconv from {where}, not from its own build")
    return python


def make_env(rev: str, work: Path, env: Path) -> None:
    src = work / f"src-{rev}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    partial = work / f"env-{rev}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(partial)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(partial), "platbase": str(partial)})["purelib"])
    # a plain path entry, not a site dir: this environment's packages without its editable pyconv
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    print(f"building {rev} ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
                    f"-Cbuild-dir={work / f'build-{rev}'}", str(src)], check=True)
    partial.rename(env)


def inputs(work: Path) -> dict[str, Path]:
    smollm2 = smollm2_hf(work / "inputs" / "smollm2")
    synth = work / "inputs" / "synth"
    if not (synth / "tokenizer.json").exists():
        shutil.rmtree(synth, ignore_errors=True)
        write_checkpoint(SYNTH_SHAPE, synth, shard_bytes=4_000_000)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(smollm2 / name, synth / name)
    return {"smollm2": smollm2, "synth": synth}


def run(python: Path, case: Case, src: Path, root: Path) -> tuple[int, str]:
    out = case.output(root)
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    cmd = [str(python), "-m", "pyconv", "convert", str(src), "-o", str(out), "--to", case.to, "--outtype", case.outtype,
           "--threads", "2", *case.extra]
    # run outside the repository, whose pyconv/ would otherwise shadow the environment's
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    return r.returncode, r.stderr.strip().splitlines()[-1] if r.returncode and r.stderr.strip() else ""


def meta_without_time(path: Path) -> object:
    data = json.loads(path.read_text())
    data.pop("created", None)
    return data


def differences(a: Path, b: Path) -> list[str]:
    """Files under the two case folders that differ or exist on one side only."""
    found: list[str] = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    found += [f"only before: {p}" for p in sorted(files_a - files_b)]
    found += [f"only after: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        if rel.name.endswith(".meta.json"):
            same = meta_without_time(a / rel) == meta_without_time(b / rel)
        else:
            same = filecmp.cmp(a / rel, b / rel, shallow=False)
        if not same:
            found.append(f"differs: {rel}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="commit whose outputs are the reference")
    ap.add_argument("--after", default="HEAD", help="commit compared with it (default: HEAD)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "byte-identity", help="inputs, builds and outputs")
    args = ap.parse_args()
    work = args.work.resolve()
    revs = {side: subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True, capture_output=True,
                                 text=True).stdout.strip() for side, rev in (("before", args.before), ("after", args.after))}
    pythons = {side: build(rev, work) for side, rev in revs.items()}
    sources = inputs(work)
    failures = 0
    for case in cases():
        outcomes = {side: run(pythons[side], case, sources[case.source], work / "out" / side) for side in pythons}
        problems = [] if outcomes["before"] == outcomes["after"] else [f"outcome {outcomes['before']} vs {outcomes['after']}"]
        if not problems and outcomes["before"][0] == 0:
            problems = differences(case.output(work / "out" / "before").parent, case.output(work / "out" / "after").parent)
        status = "same bytes" if not problems and outcomes["before"][0] == 0 else "same refusal" if not problems else "DIFFERENT"
        detail = f" ({outcomes['before'][1]})" if status == "same refusal" else ""
        print(f"{case.name:40s} {status}{detail}")
        for p in problems:
            print(f"    {p}")
        failures += bool(problems)
    print(f"{len(cases()) - failures} of {len(cases())} cases identical between {revs['before']} and {revs['after']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
