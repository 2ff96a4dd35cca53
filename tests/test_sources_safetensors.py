"""The safetensors reader trusts nothing: every malformed file is one clear line naming the file."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyconv import inspect
from pyconv.errors import ConversionError
from pyconv.options import ConvertOptions
from pyconv.sources import open_checkpoint
from pyconv.sources.safetensors import read_file

from .conftest import save_safetensors


def raw_file(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return path


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}

MALFORMED = [
    ("short", lambda p: p.write_bytes(b"\x01\x02"), "shorter than the 8-byte header length"),
    ("huge_header", lambda p: raw_file(p, GOOD, bytes(16), length=2**62), "over the 100000000-byte limit"),
    ("past_end", lambda p: raw_file(p, GOOD, bytes(16), length=4096), "runs past the end of the file"),
    ("not_json", lambda p: raw_file(p, b"{not json", bytes(16)), "not valid JSON"),
    ("not_object", lambda p: raw_file(p, [1, 2], b""), "not a JSON object"),
    ("bad_dtype", lambda p: raw_file(p, {"w": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "unknown dtype 'F31'"),
    ("bad_shape", lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)), "not a list of non-negative"),
    ("span_mismatch", lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)), "needs 12 bytes"),
    ("outside", lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "fall outside the 8 data bytes"),
    ("overlap", lambda p: raw_file(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)), "overlap"),
    ("bad_offsets", lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, bytes(4)), "not a pair of integers"),
    ("bad_metadata", lambda p: raw_file(p, {"__metadata__": {"a": 1}, **GOOD}, bytes(16)), "__metadata__ must map strings"),
]


@pytest.mark.parametrize("name,make,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_give_one_line_errors(tmp_path: Path, name: str, make: object, message: str) -> None:
    path = tmp_path / f"{name}.safetensors"
    make(path)  # type: ignore[operator]
    with pytest.raises(ConversionError) as e:
        open_checkpoint(path)
    text = str(e.value)
    assert message in text and str(path) in text and "\n" not in text


def test_index_entries_must_stay_in_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    save_safetensors(outside, {"w": np.zeros(2, np.float32)})
    folder = tmp_path / "model"
    folder.mkdir()
    for target in ("../outside.safetensors", "/etc/passwd", "", 7):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": target}}))
        with pytest.raises(ConversionError, match="weight_map"):
            open_checkpoint(folder)
    (folder / "link.safetensors").symlink_to(outside)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "link.safetensors"}}))
    with pytest.raises(ConversionError, match="points outside the folder"):
        open_checkpoint(folder)


def test_index_naming_missing_shards_or_tensors(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "a.safetensors", {"w": np.zeros(2, np.float32)})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "b.safetensors"}}))
    with pytest.raises(ConversionError, match=re.escape("shard 'b.safetensors' listed in the index is missing")):
        open_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors", "v": "a.safetensors"}}))
    with pytest.raises(ConversionError, match="first 'v'"):
        open_checkpoint(tmp_path)


def test_loose_files_sharing_a_tensor_are_not_merged(tmp_path: Path, cli: Any) -> None:
    save_safetensors(tmp_path / "model.safetensors", {"lm_head.weight": np.zeros(2, np.float32), "a": np.ones(2, np.float32)})
    save_safetensors(tmp_path / "reference.safetensors", {"lm_head.weight": np.ones(2, np.float32)})
    r = cli("convert", tmp_path, "-o", tmp_path / "out.safetensors", "-q")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert (f"{tmp_path}: tensor 'lm_head.weight': 'model.safetensors' and 'reference.safetensors' both hold this tensor "
            "and there is no index: they are separate models, name the file to convert") in r.stderr
    assert not (tmp_path / "out.safetensors").exists()
    # beside a torch file the message says how to read that instead
    torch.save({"w": torch.ones(3)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"also holds torch: pick one with --source safetensors\|torch\)$"):
        open_checkpoint(tmp_path)
    ck = open_checkpoint(tmp_path, ConvertOptions.of(source_format="torch"))
    assert ck.format_name == "torch" and list(ck.tensors) == ["w"]
    r = cli("inspect", tmp_path, "--source", "torch", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "torch", r.stderr
    ck = open_checkpoint(tmp_path / "model.safetensors", ConvertOptions.of(source_format="safetensors"))
    assert sorted(ck.tensors) == ["a", "lm_head.weight"]


@pytest.mark.parametrize("named, message", [
    ("zero", "--source zero: this holds no zero checkpoint; it holds safetensors (--source safetensors)"),
    ("pickle", "--source pickle is not a source format pyconv reads (neobert, lora, native, zero, safetensors, gguf, dcp, torch)"),
])
def test_source_names_a_reader_that_reads_the_path(tmp_path: Path, cli: Any, named: str, message: str) -> None:
    save_safetensors(tmp_path / "model.safetensors", {"w": np.zeros(2, np.float32)})
    r = cli("convert", tmp_path, "-o", tmp_path / "out.gguf", "--source", named)
    assert r.returncode == 1 and r.stderr == f"pyconv: error: {tmp_path}: {message}\n", r.stderr


def test_inspect_lists_what_the_library_wrote(tmp_path: Path) -> None:
    arrays = {"b": np.ones((3, 5), np.float16), "a": np.arange(4, dtype=np.int32)}
    path = save_safetensors(tmp_path / "m.safetensors", arrays, {"format": "pt", "note": "x"})
    info = inspect(path)
    assert info["metadata"] == {"format": "pt", "note": "x"}
    assert {t["name"]: (t["dtype"], t["shape"], t["bytes"]) for t in info["tensors"]} == {"b": ("f16", [3, 5], 30), "a": ("i32", [4], 16)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), length=st.one_of(st.integers(0, 400), st.integers(0, 2**64 - 1)))
def test_fuzzed_headers_end_in_a_clean_error(tmp_path: Path, data: bytes, length: int) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", length) + data)
    try:
        read_file(path)
    except ConversionError as e:
        assert "\n" not in str(e) and str(path) in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.text(max_size=5), st.one_of(
    st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]),
                    st.one_of(st.sampled_from(["F32", "BF16", "I8", "Q"]), st.lists(st.integers(-3, 2**40), max_size=3),
                              st.none(), st.booleans())),
    st.integers(), st.text(max_size=3)), max_size=4))
def test_fuzzed_json_headers_end_in_a_clean_error(tmp_path: Path, header: dict[str, object]) -> None:
    path = raw_file(tmp_path / "fuzz.safetensors", header, bytes(64))
    try:
        tensors, _meta = read_file(path)
    except ConversionError as e:
        assert "\n" not in str(e)
    else:
        for t in tensors.values():  # whatever was accepted lies inside the file
            assert all(s.offset + s.nbytes <= path.stat().st_size for s in t.segments)
