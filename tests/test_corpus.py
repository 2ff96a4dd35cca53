"""Every malicious or malformed input of tests/corpus.py, read in-process and by ``pyconv inspect`` and
``pyconv convert`` in a subprocess with a memory cap and a time limit: one line naming the file and the
problem, exit 1, no payload run, nothing written, the input untouched."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import pyconv
from pyconv.compression import opened
from pyconv.errors import ConversionError
from pyconv.options import ConvertOptions

from .conftest import file_digests
from .corpus import CASES, MARKER, Case, Workshop, memory_cap

# Address space a pyconv run may map: the interpreter and its libraries take about 300 MB, the inputs
# here are kilobytes, so an allocation sized by a lying header cannot fit.
MEMORY_CAP = 768 << 20
IN_PROCESS_CAP = 512 << 20  # beyond what this test process already maps
TIME_LIMIT = 60.0
OUTPUT_SUFFIX = {"safetensors": ".safetensors", "gguf": ".gguf", "hf": ""}


def capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def pyconv_capped(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyconv", *map(str, args)], capture_output=True, text=True,
                          timeout=TIME_LIMIT, preexec_fn=capped)


def one_error_line(r: subprocess.CompletedProcess[str], case: Case, where: Path) -> str:
    assert r.returncode == 1, f"exit {r.returncode}: {r.stderr[-2000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyconv: error: "), r.stderr[-2000:]
    assert case.message is not None and case.message in lines[0], lines[0][:2000]
    assert str(where) in lines[0] and len(lines[0]) < 2000, lines[0][:2000]
    return lines[0]


def read(source: Path) -> None:
    """What every command does first: open the checkpoint (decompressing a .zst beside it)."""
    with opened(source, ConvertOptions(), near=source.parent):
        pass


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus-shared")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_input_ends_in_one_clean_line(case: Case, tmp_path: Path, shared: Path) -> None:
    work = Workshop(tmp_path / "in", shared)
    source = case.build(work)
    before = file_digests(work.folder)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"model{OUTPUT_SUFFIX[case.to]}"

    with memory_cap(IN_PROCESS_CAP):
        if case.message is None or case.opens:
            read(source)
        else:
            with pytest.raises(ConversionError) as e:
                read(source)
            assert case.message in str(e.value) and "\n" not in str(e.value)
        if case.opens:
            with pytest.raises(ConversionError) as e:
                pyconv.convert(source, out, to=case.to, dry_run=True, progress=False)
            assert case.message is not None and case.message in str(e.value) and "\n" not in str(e.value)

    inspected = pyconv_capped("inspect", source)
    converted = pyconv_capped("convert", source, "-o", out, "--to", case.to, "-q")
    if case.message is None:
        assert inspected.returncode == 0, inspected.stderr[-2000:]
        assert converted.returncode == 0, converted.stderr[-2000:]
        assert out.exists()
    else:
        if case.opens:
            assert inspected.returncode == 0, inspected.stderr[-2000:]
        else:
            one_error_line(inspected, case, work.folder)
        one_error_line(converted, case, work.folder)
        assert list(out_dir.iterdir()) == []
    assert not (work.folder / MARKER).exists() and not (Path.cwd() / MARKER).exists()
    assert file_digests(work.folder) == before


@pytest.mark.parametrize("name", ["torch-os-system", "torch-nested-pickle", "torch-rebuild-calls-exec", "zero-payload", "dcp-payload"])
def test_payloads_are_live(name: str, tmp_path: Path, shared: Path) -> None:
    """torch's own unrestricted loaders run these payloads: the refusals above are of working attacks."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader

    case = next(c for c in CASES if c.name == name)
    work = Workshop(tmp_path, shared)
    source = case.build(work)
    if name == "dcp-payload":  # what dcp.load and dcp_to_torch_save call first
        FileSystemReader(source).read_metadata()
        assert work.marker.exists()
        return
    if source.is_dir():
        source = source / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    with contextlib.suppress(Exception):
        torch.load(source, weights_only=False)
    assert work.marker.exists()
