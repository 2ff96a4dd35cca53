"""GGUF as a source: a hardened parser (checked against files gguf-py writes) and dequantizing reads."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyconv
from pyconv.errors import ConversionError
from pyconv.sources import open_checkpoint
from pyconv.sources.gguf import read_gguf

from .conftest import smollm2_gguf


def gguf_py_file(path: Path) -> dict[str, np.ndarray]:
    """A small GGUF written by gguf-py itself, with quantized and float tensors."""
    rng = np.random.default_rng(0)
    arrays = {"a.weight": rng.standard_normal((8, 64)).astype(np.float32), "b.weight": rng.standard_normal(64).astype(np.float32),
              "c.weight": rng.standard_normal((4, 32)).astype(np.float16)}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_array("test.strings", ["x", "yz", "ünï"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_float64("test.f64", 0.25)
    w.add_tensor("a.weight", gguf.quants.quantize(arrays["a.weight"], gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("b.weight", arrays["b.weight"])
    w.add_tensor("c.weight", arrays["c.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arrays


def test_reads_what_gguf_py_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    arrays = gguf_py_file(path)
    g = read_gguf(path)
    assert g.kv["test.strings"].value == ["x", "yz", "ünï"] and list(g.kv["test.ints"].value) == [1, 2, 3]
    assert g.kv["test.f64"].value == 0.25 and g.kv["general.architecture"].value == "llama"
    ref = gguf.GGUFReader(path)
    for t in ref.tensors:
        ours = g.tensors[t.name]
        assert ours.dtype == t.tensor_type.name.lower() and ours.shape == tuple(int(d) for d in reversed(t.shape))
        assert ours.segments[0].offset == t.data_offset and ours.nbytes == t.n_bytes
    # dequantized through the engine into safetensors: equal to gguf-py's dequantize
    out = tmp_path / "m.safetensors"
    pyconv.convert(path, out, outtype="f32", progress=False)
    from safetensors.numpy import load_file

    got = load_file(out)
    assert np.array_equal(got["a.weight"], gguf.quants.dequantize(np.asarray(ref.tensors[0].data), gguf.GGMLQuantizationType.Q8_0))
    assert np.array_equal(got["b.weight"], arrays["b.weight"]) and np.array_equal(got["c.weight"], arrays["c.weight"].astype(np.float32))


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


MALFORMED = [
    ("magic", b"GGML" + bytes(40), "bad magic"),
    ("version", header(0, 0, version=1) + bytes(16), "version 1 is not supported"),
    ("tensor_count", header(2**63, 0) + bytes(64), "tensor count 9223372036854775808 cannot fit"),
    ("kv_count", header(0, 2**40) + bytes(64), "key-value count"),
    ("string_length", header(0, 1) + struct.pack("<Q", 2**62) + bytes(32), "string length"),
    ("value_type", header(0, 1) + gstr(b"k") + struct.pack("<I", 99) + bytes(16), "unknown value type 99"),
    ("array_count", header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 4, 2**60) + bytes(16), "array count"),
    ("dims", header(1, 0) + gstr(b"t") + struct.pack("<I", 7) + bytes(64), "7 dimensions"),
    ("ggml_type", header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 4, 77, 0) + bytes(64), "unknown ggml type 77"),
    ("past_end", header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 100, 0, 0) + bytes(64), "past the end of the file"),
    ("huge_shape", header(1, 0) + gstr(b"t") + struct.pack("<IQQIQ", 2, 2**40, 2**40, 0, 0) + bytes(64), "cannot fit in a"),
    ("misaligned", header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 4, 0, 4) + bytes(96), "misaligned"),
    ("duplicate_key", header(0, 2) + (gstr(b"k") + struct.pack("<II", 4, 1)) * 2 + bytes(16), "appears twice"),
]


@pytest.mark.parametrize("name,blob,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_lying_headers_end_in_one_clear_line(tmp_path: Path, name: str, blob: bytes, message: str) -> None:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(blob)
    with pytest.raises(ConversionError) as e:
        open_checkpoint(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_gguf_files_end_in_a_clean_error(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "valid.gguf"
    if not path.exists():
        gguf_py_file(path)
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, min(len(blob) - 1, 600)))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    fuzzed = tmp_path / "fuzzed.gguf"
    fuzzed.write_bytes(bytes(blob))
    try:
        g = read_gguf(fuzzed)
    except ConversionError as e:
        assert "\n" not in str(e)
    else:
        for t in g.tensors.values():
            assert t.segments[0].offset + t.nbytes <= len(blob)


def test_real_q4_1_model_dequantizes_to_what_gguf_py_gets(tmp_path: Path) -> None:
    src = smollm2_gguf()
    out = tmp_path / "smol.safetensors"
    pyconv.convert(src, out, outtype="f32", progress=False)
    ref = {t.name: t for t in gguf.GGUFReader(src).tensors}
    from safetensors import safe_open

    with safe_open(out, "np") as f:
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
            t = ref[name]
            want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(int(d) for d in reversed(t.shape)))
            assert np.array_equal(f.get_tensor(name), want), name


def test_split_sets_open_as_one_checkpoint(tmp_path: Path) -> None:
    src = smollm2_gguf()
    out = tmp_path / "s.gguf"
    pyconv.convert(src, out, split_max_tensors=100, progress=False)
    shards = sorted(tmp_path.glob("s-*-of-00003.gguf"))
    assert len(shards) == 3
    ck = open_checkpoint(shards[1])
    assert len(ck.tensors) == 272 and ck.files == shards
    shards[2].unlink()
    with pytest.raises(ConversionError, match=re.escape("split set is missing s-00003-of-00003.gguf")):
        open_checkpoint(shards[0])
