"""The engine's ternary path. Sources are safetensors files written by the safetensors library, the
outputs raw files laid out by the test. I2_S/TQ1_0/TQ2_0/Q8_0 bytes are compared with
``pyconv.quantize`` (itself checked against gguf-py and BitNet's vectors) and with gguf-py; BitNet's
absmean ternarization (docs/i2s.md, "Ternarizing") with numpy and with torch computing it as the model does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

import pyconv
from pyconv import engine
from pyconv.options import DEFAULT_CHUNK_BYTES
from pyconv.plan import Op, OutFile, OutTensor, Plan, View
from pyconv.quants import describe_difference
from pyconv.sources.base import SourceTensor
from pyconv.sources.safetensors import read_file

from .test_engine import write_source

F32 = np.float32
HEADER = b"RAW-TEST"
TYPES = ["i2_s", "tq1_0", "tq2_0", "q8_0"]
RUNS = [(1, 4096), (2, 4096), (1, DEFAULT_CHUNK_BYTES), (2, DEFAULT_CHUNK_BYTES)]  # (threads, chunk bytes)
Reports = dict[str, dict[str, Any]]


def f32_means(reports: Reports) -> Reports:
    return {k: {**r, "mean_abs": F32(r["mean_abs"])} for k, r in reports.items()}


def run(tmp_path: Path, make: Callable[[], list[OutTensor]]) -> tuple[dict[str, bytes], Reports]:
    """Runs the tensors ``make()`` builds at every thread count and chunk size of RUNS, each time into
    one raw file at explicit offsets (8 bytes apart, after a header); returns each tensor's bytes and
    the engine's reports. Bytes must not depend on threads or chunks, nor reports on threads; the
    double sum behind mean_abs is grouped by chunks, so across chunk sizes only its f32 must agree."""
    results: dict[tuple[int, int], tuple[dict[str, bytes], Reports]] = {}
    for threads, chunk in RUNS:
        tensors = make()
        at = len(HEADER)
        for t in tensors:
            t.offset = at + 8
            at = t.offset + t.nbytes
        out = tmp_path / f"out-{threads}-{chunk}.raw"
        reports = engine.execute(Plan([OutFile(out.name, "raw", size=at, blobs=[(0, HEADER)])], tensors), [out],
                                 threads=threads, chunk_bytes=chunk)
        raw = out.read_bytes()
        assert raw.startswith(HEADER) and len(raw) == at
        data = {t.name: raw[t.offset:t.offset + t.nbytes] for t in tensors}
        by_name = {r["name"]: r for r in reports}
        results[threads, chunk] = data, by_name
        first_data, first_reports = results[RUNS[0]]
        for t in tensors:
            got, want = data[t.name], first_data[t.name]
            assert got == want, f"threads={threads} chunk={chunk}: {describe_difference(got, want, t.dtype)}"
        assert by_name == results[1, chunk][1]
        assert f32_means(by_name) == f32_means(first_reports)
    return results[RUNS[0]]


def ternarize(w: np.ndarray, mean: F32) -> np.ndarray:
    """docs/i2s.md's absmean in float32 with numpy: s = 1 / max(mean, 1e-5), clamp(rint(W s), -1, 1) / s."""
    s = F32(1) / np.maximum(mean, F32(1e-5))
    return (np.clip(np.rint(w * s), F32(-1), F32(1)) / s).astype(F32)


def double_mean(w: np.ndarray) -> F32:
    """mean |W| accumulated in double and rounded once to f32, as the engine promises."""
    return F32(np.abs(w.astype(np.float64)).sum() / w.size)


def torch_forward(w: torch.Tensor) -> torch.Tensor:
    """The weights a BitNet forward pass uses (HF WeightQuant, BitNet's weight_quant)."""
    W = w.float()
    s = 1.0 / W.abs().mean().clamp(min=1e-5)
    return ((W * s).round().clamp(-1, 1) / s).to(torch.bfloat16)


def absmean(round_to: str = "f32", keep_if_ternary: bool = True) -> list[Op]:
    return [Op("ternarize_absmean", keep_if_ternary=keep_if_ternary, round_to=round_to)]


def with_ops(t: OutTensor, ops: list[Op]) -> OutTensor:
    t.ops = ops
    return t


def gguf_bytes(x: np.ndarray, name: str) -> bytes:
    return gguf.quants.quantize(x, gguf.GGMLQuantizationType[name.upper()]).tobytes()


def assert_same(got: bytes, want: bytes, dtype: str, what: str) -> None:
    assert got == want, f"{what}: {describe_difference(got, want, dtype)}"


def test_quantized_outputs_equal_pyconv_quantize_and_gguf(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {"w": rng.standard_normal((256, 384)).astype(F32),
              "t": (rng.integers(-1, 2, (64, 512)) * F32(0.0123)).astype(F32)}
    arrays["w"][7] = 0.0
    src = write_source(tmp_path, arrays)
    views = {"w": View.of(src["w"]), "wT": View.of(src["w"]).transpose(), "t": View.of(src["t"])}
    values = {"w": arrays["w"], "wT": np.ascontiguousarray(arrays["w"].T), "t": arrays["t"]}
    data, reports = run(tmp_path, lambda: [OutTensor.from_view(f"{k}.{q}", v, q) for k, v in views.items()
                                           for q in TYPES if values[k].shape[1] % 256 == 0 or q in ("i2_s", "q8_0")])
    for name, raw in data.items():
        key, q = name.split(".")
        assert_same(raw, pyconv.quantize(values[key], q), q, name)
        if q != "i2_s":
            assert_same(raw, gguf_bytes(values[key], q), q, f"{name} vs gguf")
    # I2_S without ternarization keeps signs at the tensor's absmax, which the engine reports
    assert reports["w.i2_s"]["scale"] == np.abs(arrays["w"]).max() and not reports["w.i2_s"]["ternarized"]
    assert set(reports) == {"w.i2_s", "wT.i2_s", "t.i2_s"}


def weight_like(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Weight-like f32 tensors of several laws and sizes (rows a multiple of 256)."""
    out = []
    for i in range(count):
        shape = (int(rng.integers(8, 96)), 256 * int(rng.integers(1, 4)))
        law = i % 3
        w = rng.standard_normal(shape) if law == 0 else rng.laplace(size=shape) if law == 1 else rng.uniform(-1, 1, shape)
        out.append((w * 10.0 ** rng.uniform(-3, 0)).astype(F32))
    return out


def test_absmean_matches_the_double_precision_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ws = weight_like(rng, 12)
    ws[0][:, :5] = 0.0
    # |W| is 0.125 or 0.375 half and half: mean 0.25 exactly, so W s lands on +-0.5 (rounds to 0, half
    # to even) and +-1.5 (to +-2, clamped to 1)
    ws.append((rng.permutation(np.repeat([0.125, 0.375], 4096)) * rng.choice([-1, 1], 8192)).reshape(32, 256).astype(F32))
    src = write_source(tmp_path, {f"w{i}": w for i, w in enumerate(ws)})

    def make() -> list[OutTensor]:
        return [with_ops(OutTensor.from_view(f"w{i}.{q}", View.of(src[f"w{i}"]), q), absmean())
                for i in range(len(ws)) for q in ("f32", "i2_s", "tq2_0")]

    data, reports = run(tmp_path, make)
    for i, w in enumerate(ws):
        mean = double_mean(w)
        assert F32(reports[f"w{i}.f32"]["mean_abs"]) == mean
        want = ternarize(w, mean)
        assert len(np.unique(np.abs(want))) == 2  # really ternary, with both zeros and non-zeros
        got = np.frombuffer(data[f"w{i}.f32"], F32).reshape(w.shape)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"w{i}"
        assert_same(data[f"w{i}.i2_s"], pyconv.quantize(want, "i2_s"), "i2_s", f"w{i}")
        assert_same(data[f"w{i}.tq2_0"], gguf_bytes(want, "tq2_0"), "tq2_0", f"w{i}")
        assert reports[f"w{i}.i2_s"]["ternarized"] and reports[f"w{i}.i2_s"]["scale"] == np.abs(want).max()


def test_absmean_bf16_matches_the_models_forward_in_torch(tmp_path: Path) -> None:
    """bf16 checkpoints as BitNet ships them; where torch's f32 mean equals the engine's (double
    accumulation rounded to f32), the bf16 weights must equal torch's bit for bit. The others are
    compared with the double-precision reference (docs/i2s.md expects rare 1-ulp mean differences)."""
    rng = np.random.default_rng(9)
    ws = [torch.from_numpy(w).to(torch.bfloat16) for w in weight_like(rng, 30)]
    save_file({f"w{i}": w for i, w in enumerate(ws)}, str(tmp_path / "bf16.safetensors"))
    src: dict[str, SourceTensor] = read_file(tmp_path / "bf16.safetensors")[0]

    def make() -> list[OutTensor]:
        return [with_ops(OutTensor.from_view(f"w{i}", View.of(src[f"w{i}"]), "bf16"), absmean("bf16"))
                for i in range(len(ws))]

    data, reports = run(tmp_path, make)
    agree = 0
    for i, w in enumerate(ws):
        got = np.frombuffer(data[f"w{i}"], np.int16).reshape(w.shape)
        w32 = w.float().numpy()
        mean = double_mean(w32)
        assert F32(reports[f"w{i}"]["mean_abs"]) == mean
        want = torch.from_numpy(ternarize(w32, mean)).to(torch.bfloat16)
        assert np.array_equal(got, want.view(torch.int16).numpy()), f"w{i} vs the double-precision reference"
        if w.float().abs().mean().item() == mean:
            agree += 1
            assert np.array_equal(got, torch_forward(w).view(torch.int16).numpy()), f"w{i} vs torch"
    assert agree >= 5, f"torch's f32 mean agreed on only {agree} of {len(ws)} tensors: the torch check is too thin"


def test_already_ternary_tensors_are_packed_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    tern = (rng.integers(-1, 2, (32, 256)) * F32(0.37)).astype(F32)
    # BitNet's zero test is |x| < 1e-6 in double: 1e-6f and -0.0 are zeros, so this is still ternary
    tern[0, :3] = [F32(1e-6), F32(-0.0), F32(-1e-7)]
    zeros = np.zeros((4, 128), F32)
    src = write_source(tmp_path, {"tern": tern, "zeros": zeros})

    def make() -> list[OutTensor]:
        t, z = View.of(src["tern"]), View.of(src["zeros"])
        return [with_ops(OutTensor.from_view("tern.i2_s", t, "i2_s"), absmean("bf16")),
                with_ops(OutTensor.from_view("tern.tq1_0", t, "tq1_0"), absmean()),
                with_ops(OutTensor.from_view("tern.f32", t, "f32"), absmean()),
                with_ops(OutTensor.from_view("again.f32", t, "f32"), absmean(keep_if_ternary=False)),
                with_ops(OutTensor.from_view("zeros.i2_s", z, "i2_s"), absmean())]

    data, reports = run(tmp_path, make)
    for name in ("tern.i2_s", "tern.tq1_0", "tern.f32", "zeros.i2_s"):
        assert reports[name]["already_ternary"] and not reports[name]["ternarized"], name
    assert reports["tern.i2_s"]["scale"] == F32(0.37)
    assert_same(data["tern.i2_s"], pyconv.quantize(tern, "i2_s"), "i2_s", "tern.i2_s")
    assert_same(data["tern.tq1_0"], gguf_bytes(tern, "tq1_0"), "tq1_0", "tern.tq1_0")
    assert data["tern.f32"] == tern.tobytes()
    assert data["zeros.i2_s"] == b"\x55" * 128 + bytes(32)
    # ternarizing again would rescale to the mean (the "double quantization" BitNet warns about)
    again = ternarize(tern, double_mean(tern))
    assert reports["again.f32"]["ternarized"] and data["again.f32"] == again.tobytes()
    assert not np.array_equal(again, np.where(np.abs(tern) < F32(1e-6), F32(0), tern))
