"""One way to time a command and read its peak RSS, shared by every benchmark.

Each measured command runs as its own process under GNU time, which reports that command's CPU
seconds and peak RSS alone. Baselines run in the same session, on the same inputs. A contender is
timed until its output is on disk: pyconv fsyncs what it writes, `cp` and the other tools leave it
in the page cache, so every command is followed by `sync` inside the timed process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConversionError

TIME = "/usr/bin/time"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")


@dataclass
class Measurement:
    label: str
    wall_s: float
    cpu_s: float
    peak_rss: int          # bytes
    input_bytes: int
    returncode: int
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def gbps(self) -> float:
        return self.input_bytes / self.wall_s / 1e9 if self.wall_s > 0 else 0.0


@contextmanager
def memory_cap(limit: int) -> Iterator[Path]:
    """A cgroup (v1 memory controller) holding whatever is started in it to ``limit`` bytes of
    memory, page cache included; past it the kernel reclaims cache and OOM-kills anonymous growth."""
    group = CGROUP_MEMORY / f"pyconv-bench-{os.getpid()}"
    if not CGROUP_MEMORY.is_dir():
        raise ConversionError(f"{CGROUP_MEMORY} is not mounted: no memory cgroup to cap runs with")
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        yield group
    finally:
        for _ in range(50):  # a killed member may take a moment to leave the group
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def measure(label: str, cmd: Sequence[str], *, input_bytes: int, env: dict[str, str] | None = None,
            cwd: Path | None = None, note: str = "", cgroup: Path | None = None,
            timeout: float | None = None) -> Measurement:
    """Run ``cmd`` to completion and return its wall time, CPU time and peak RSS.

    GNU time forks the command from its own small image: a child forked from this Python process
    would start with our RSS as its high-water mark and inflate every small tool's peak. With
    ``cgroup`` the command (and GNU time) run inside that memory cgroup. A run still going after
    ``timeout`` seconds is stopped (its whole process group) and reported as failed.
    """
    if not Path(TIME).exists():
        raise ConversionError(f"{TIME} is needed to measure peak RSS (Debian package 'time')")
    full_env = {**os.environ, **(env or {})}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        timed = [TIME, "-q", "-f", "%U %S %M", "-o", report.name, *cmd]
        if cgroup is not None:  # join the group first, then become the timed command
            timed = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *timed]
        start = time.perf_counter()
        proc = subprocess.Popen(timed, env=full_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            stderr = proc.communicate(timeout=timeout)[1]
            stopped = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stderr = proc.communicate()[1]
            stopped = True
        wall = time.perf_counter() - start
        fields = report.read().split()
    if stopped or len(fields) < 3:  # GNU time itself was killed: no report of the command's rusage
        return Measurement(label, wall, 0.0, 0, input_bytes, proc.returncode or -9,
                           f"stopped after {timeout:.0f} s, unfinished" if stopped else "no report from GNU time")
    user, system, max_kb = float(fields[-3]), float(fields[-2]), int(fields[-1])
    if proc.returncode != 0:  # what went wrong replaces what the row would have said
        note = (stderr.strip().splitlines() or ["failed"])[-1][:200]
    if cgroup is not None and _oom_kills(cgroup) > 0:
        note = "killed by the kernel's OOM killer at the cgroup's memory limit"
    elif proc.returncode == 128 + signal.SIGKILL:  # GNU time exits with 128 + the signal that ended the command
        note = "killed (SIGKILL)"
    return Measurement(label, wall, user + system, max_kb * 1024, input_bytes, proc.returncode, note)


def until_on_disk(cmd: Sequence[str]) -> list[str]:
    """``cmd``, then ``sync`` once it succeeded, as one process: its exit status is the command's."""
    return ["sh", "-c", '"$@" && exec sync', "sh", *cmd]


def best_of(rounds: int, label: str, cmd: Sequence[str], *, inputs: Sequence[Path], out: Path, note: str = "",
            describe: Callable[[], str] | None = None, cgroup: Path | None = None,
            timeout: float | None = None) -> Measurement:
    """The fastest successful of ``rounds`` runs (else the fastest failure) of ``cmd`` until its output
    is on disk, each writing into an emptied ``out`` folder from a page cache holding ``inputs``;
    ``describe`` tells what the output came to, read before it is removed. A line per row goes to
    stderr as it finishes."""
    runs = []
    for _ in range(rounds):
        remove(out)
        out.mkdir(parents=True)
        warm_page_cache(inputs)
        m = measure(label, until_on_disk(cmd), input_bytes=total_size(inputs), note=note, cgroup=cgroup, timeout=timeout)
        if m.ok and describe is not None:
            m.note = f"{note}; {describe()}"
        runs.append(m)
    remove(out)
    best = min(runs, key=lambda r: (not r.ok, r.wall_s))
    print(f"  {label}: {best.wall_s:.2f} s, {best.gbps:.3f} GB/s, CPU {best.cpu_s:.1f} s, peak RSS {best.peak_rss / 1e6:.0f} MB"
          + ("" if best.ok else f" FAILED: {best.note}"), file=sys.stderr, flush=True)
    return best


def _oom_kills(cgroup: Path) -> int:
    """How many of the group's processes the OOM killer ended (cgroup v1 keeps the count per group)."""
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Start every contender from a page cache holding its inputs, with earlier outputs flushed."""
    subprocess.run(["sync"], check=True)
    for p in paths:
        with p.open("rb") as f:
            while f.read(16 << 20):
                pass


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def files_in(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def total_size(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def markdown_table(rows: Sequence[Measurement], *, baseline: str | None = None) -> str:
    base = next((m for m in rows if m.label == baseline), None)
    head = "| run | wall s | CPU s | peak RSS MB | input GB/s |" + (f" × {baseline} |" if base else "") + " note |"
    sep = "|---|---:|---:|---:|---:|" + ("---:|" if base else "") + "---|"
    lines = [head, sep]
    for m in rows:
        ratio = f" {m.gbps / base.gbps:.2f} |" if base and base.ok and m.ok else (" |" if base else "")
        status = (m.note if m.ok else f"FAILED: {m.note}").replace("|", "\\|")  # a | in a cell would end it
        lines.append(f"| {m.label} | {m.wall_s:.2f} | {m.cpu_s:.2f} | {m.peak_rss / 1e6:.0f} | {m.gbps:.3f} |{ratio} {status} |")
    return "\n".join(lines)
