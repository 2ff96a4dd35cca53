"""The engine's recipes (views, concat, gaps, segmented sources), determinism and failure rules.

Outputs are read back with the ``safetensors`` library and compared with numpy doing the same
transform, so the engine is never checked against itself.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pyconv import _core, engine
from pyconv.errors import ConversionError
from pyconv.plan import OutFile, OutTensor, Part, Plan, View
from pyconv.sources.base import Segment, SourceTensor
from pyconv.sources.safetensors import read_file

from .conftest import save_safetensors


def write_source(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "src.safetensors") -> dict[str, SourceTensor]:
    return read_file(save_safetensors(tmp_path / name, arrays))[0]


def run(tmp_path: Path, tensors: list[OutTensor], *, threads: int = 0, chunk: int = 4 << 20, name: str = "out.safetensors") -> dict[str, np.ndarray]:
    out = tmp_path / name
    out.unlink(missing_ok=True)
    engine.execute(Plan([OutFile(name, "safetensors")], tensors), [out], threads=threads, chunk_bytes=chunk)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in load_file(out).items()}


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order for rotary, written with numpy."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((96, 130)).astype(np.float32),
        "b": rng.standard_normal((40, 130)).astype(np.float32),
        "c": rng.standard_normal((3, 17, 29)).astype(np.float32),
        "i": rng.integers(-5, 5, (11, 7)).astype(np.int64),
    }


@pytest.mark.parametrize("chunk", [256, 4096, 4 << 20])
def test_views_transpose_slice_permute(tmp_path: Path, arrays: dict[str, np.ndarray], chunk: int) -> None:
    src = write_source(tmp_path, arrays)
    a, c = View.of(src["a"]), View.of(src["c"])
    tensors = [
        OutTensor.from_view("t", a.transpose(), "f32"),
        OutTensor.from_view("s", a.slice(0, 10, 50).slice(1, 3, 103), "f16"),
        OutTensor.from_view("p", c.permute(2, 0, 1), "f32"),
        OutTensor.from_view("tt", c.transpose(0, 2).slice(0, 5, 20), "f32"),
    ]
    got = run(tmp_path, tensors, chunk=chunk)
    assert np.array_equal(got["t"], arrays["a"].T)
    assert np.array_equal(got["s"], arrays["a"][10:50, 3:103].astype(np.float16))
    assert np.array_equal(got["p"], arrays["c"].transpose(2, 0, 1))
    assert np.array_equal(got["tt"], arrays["c"].transpose(2, 1, 0)[5:20])


def test_rope_permutation_as_a_4d_layout(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    n_head, rows, cols = 4, 96, 130
    view = View.of(src["a"]).reshape(n_head, 2, rows // n_head // 2, cols).transpose(1, 2)
    t = OutTensor("q", (rows, cols), "f32", [Part(view, (0, 0, 0, 0))], layout=view.shape)
    for chunk in (512, 4 << 20):
        assert np.array_equal(run(tmp_path, [t], chunk=chunk)["q"], llama_permute(arrays["a"], n_head))


def test_concat_along_rows_and_columns_with_mixed_types(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    # a second file holding b as bf16, written by torch, so the parts differ in type
    save_file({"b16": torch.from_numpy(arrays["b"]).to(torch.bfloat16)}, str(tmp_path / "bf.safetensors"))
    bf16 = read_file(tmp_path / "bf.safetensors")[0]["b16"]
    a, b = View.of(src["a"]), View.of(src["b"])
    rows = OutTensor.concat("rows", [a, View.of(bf16)], 0, "f32")
    cols = OutTensor.concat("cols", [a.transpose(), b.transpose()], 1, "f16")
    got = run(tmp_path, [rows, cols], chunk=2048)
    b_rounded = torch.from_numpy(arrays["b"]).to(torch.bfloat16).float().numpy()
    assert np.array_equal(got["rows"], np.concatenate([arrays["a"], b_rounded]))
    assert np.array_equal(got["cols"], np.concatenate([arrays["a"].T, arrays["b"].T], axis=1).astype(np.float16))


def test_uncovered_elements_are_zero(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    padded = OutTensor("padded", (100, 130), "f32", [Part(View.of(src["b"]), (30, 0))])
    want = np.zeros((100, 130), np.float32)
    want[30:70] = arrays["b"]
    assert np.array_equal(run(tmp_path, [padded], chunk=1024)["padded"], want)


def test_integers_pass_through_and_never_cast(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    got = run(tmp_path, [OutTensor.from_view("i", View.of(src["i"]).transpose(), "i64")])
    assert np.array_equal(got["i"], arrays["i"].T)
    with pytest.raises(ConversionError, match="i64 data can only be copied"):
        engine.layout(Plan([OutFile("x.safetensors", "safetensors")], [OutTensor.from_view("i", View.of(src["i"]), "f16")]))


def segmented(tmp_path: Path, data: np.ndarray, cuts: list[int]) -> SourceTensor:
    """``data`` stored across several raw files, cut at the given byte offsets (after a junk prefix)."""
    raw = data.tobytes()
    segs, start = [], 0
    for i, end in enumerate([*cuts, len(raw)]):
        f = tmp_path / f"seg{i}.bin"
        f.write_bytes(b"\xAB" * 13 + raw[start:end] + b"\xCD" * 5)
        segs.append(Segment(f, 13, end - start))
        start = end
    return SourceTensor("seg", "f32", data.shape, tuple(segs))


@pytest.mark.parametrize("chunk", [128, 4096, 4 << 20])
def test_source_spread_over_files(tmp_path: Path, arrays: dict[str, np.ndarray], chunk: int) -> None:
    """A ZeRO-style parameter: one tensor whose bytes are segments of several files, cut mid-row."""
    data = arrays["a"]
    src = segmented(tmp_path, data, [4 * 130 * 7 + 4 * 3, 4 * 130 * 50, 4 * 130 * 50 + 8])
    v = View.of(src)
    got = run(tmp_path, [OutTensor.from_view("same", v, "f32"), OutTensor.from_view("half", v, "f16"),
                         OutTensor.from_view("tr", v.transpose(), "f32"),
                         OutTensor.from_view("rows", v.slice(0, 5, 60), "bf16")], chunk=chunk)
    assert np.array_equal(got["same"], data)
    assert np.array_equal(got["half"], data.astype(np.float16))
    assert np.array_equal(got["tr"], data.T)
    assert np.array_equal(got["rows"], torch.from_numpy(data[5:60]).to(torch.bfloat16).float().numpy())


def test_q8_0_matches_gguf_py(tmp_path: Path) -> None:
    import gguf

    data = np.random.default_rng(5).standard_normal((64, 256)).astype(np.float32)
    data[3] = 0.0  # an all-zero row takes the d == 0 branch
    src = write_source(tmp_path, {"w": data})
    out = tmp_path / "q.raw"
    t = OutTensor.from_view("w", View.of(src["w"]), "q8_0")
    engine.execute(Plan([OutFile("q.raw", "raw", size=t.nbytes)], [t]), [out], chunk_bytes=4096)
    assert out.read_bytes() == gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0).tobytes()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bytes_do_not_depend_on_threads_chunks_or_simd(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = {f"w{i}": (rng.standard_normal((rng.integers(1, 300), 64)) * 10.0 ** rng.integers(-8, 8)).astype(np.float32)
              for i in range(40)}
    src = write_source(tmp_path, arrays)
    outs = {"f16": "f16", "bf16": "bf16", "q8": "q8_0"}

    def plan_once() -> Plan:
        tensors = [OutTensor.from_view(f"{k}.{n}", View.of(t), dt) for n, t in src.items() for k, dt in outs.items()]
        size = sum(t.nbytes for t in tensors)
        at = 0
        for t in tensors:
            t.offset = at
            at += t.nbytes
        return Plan([OutFile("o.raw", "raw", size=size)], tensors)

    digests = set()
    for threads, chunk, simd in itertools.product([1, 2, 3], [1024, 65536, 4 << 20], [True, False]):
        _core.set_simd_enabled(simd)
        out = tmp_path / f"o-{threads}-{chunk}-{simd}.raw"
        engine.execute(plan_once(), [out], threads=threads, chunk_bytes=chunk)
        digests.add(digest(out))
    _core.set_simd_enabled(True)
    assert len(digests) == 1


def test_invalid_plans_name_the_tensor(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    a = View.of(src["a"])
    too_far = OutTensor("far", (10, 130), "f32", [Part(a.slice(0, 0, 10), (5, 0))])
    overlap = OutTensor("ovl", (20, 130), "f32", [Part(a.slice(0, 0, 10), (0, 0)), Part(a.slice(0, 0, 10), (5, 0))])
    past_source = OutTensor("src", (96, 130), "f32", [Part(View(src["a"], 10, (96, 130), (130, 1)), (0, 0))])
    bad_rows = OutTensor.from_view("q", View.of(src["c"]), "q8_0")
    for t, text in [(too_far, "reaches past the tensor"), (overlap, "overlap"), (past_source, "reads element"),
                    (bad_rows, "do not fit q8_0 blocks")]:
        with pytest.raises(ConversionError) as e:
            engine.layout(Plan([OutFile("x.safetensors", "safetensors")], [t]))
        assert e.value.tensor == t.name and text in str(e.value) and "\n" not in str(e.value)


def test_a_failed_run_leaves_no_file(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    src = write_source(tmp_path, arrays)
    out = tmp_path / "never.safetensors"

    def interrupt(done: int, total: int, prefixes: list[int]) -> None:
        raise KeyboardInterrupt

    big = OutTensor.from_view("a", View.of(src["a"]), "f16")
    with pytest.raises(KeyboardInterrupt):
        engine.execute(Plan([OutFile(out.name, "safetensors")], [big]), [out], chunk_bytes=256, progress=interrupt)
    assert not out.exists()
    src["a"].segments[0].path.write_bytes(b"short")  # the input shrinks under our feet
    with pytest.raises(ConversionError, match="outside the file"):
        engine.execute(Plan([OutFile(out.name, "safetensors")], [big]), [out])
    assert not out.exists()


def test_errors_carry_the_tensor_and_file_they_came_from(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The engine says which plan tensor (by index) and which file an error belongs to; nothing is
    read back from the message, so a tensor whose name holds another's quoted name is still the
    one named."""
    src = write_source(tmp_path, arrays)
    a = View.of(src["a"])
    fine = OutTensor.from_view("x", a, "f32")
    bad = OutTensor("x'y", (10, 130), "f32", [Part(a.slice(0, 0, 10), (5, 0))])
    with pytest.raises(ConversionError) as e:
        engine.layout(Plan([OutFile("o.safetensors", "safetensors")], [fine, bad]))
    assert (e.value.tensor, e.value.file) == ("x'y", None) and e.value.message.startswith("part 0 reaches past the tensor")

    past_end = OutTensor.from_view("r", View.of(src["b"]), "f32")
    past_end.offset = 100
    with pytest.raises(ConversionError) as e:
        engine.layout(Plan([OutFile("o.raw", "raw", size=50)], [past_end]))
    assert (e.value.tensor, e.value.file) == ("r", "o.raw")

    shrunk = tmp_path / "shrunk.safetensors"
    shrunk.write_bytes(src["a"].segments[0].path.read_bytes())
    short = read_file(shrunk)[0]["a"]
    shrunk.write_bytes(b"short")
    with pytest.raises(ConversionError) as e:
        engine.execute(Plan([OutFile("o.safetensors", "safetensors")], [OutTensor.from_view("a", View.of(short), "f16")]),
                       [tmp_path / "o.safetensors"])
    assert e.value.file == str(shrunk) and "outside the file" in e.value.message

    with pytest.raises(_core.CoreError) as core_error:
        core = _core.Plan()
        core.add_file(_core.OutputFile("o.raw", _core.Container.RAW, size=4))
        core.add_tensor(_core.Tensor("t", [2], [2], _core.DType.F32, 0, []))
        core.add_tensor(_core.Tensor("u", [2], [2], _core.DType.F32, 0, [], offset=8))
        core.layout()
    assert (core_error.value.tensor, core_error.value.file) == (0, "o.raw")
