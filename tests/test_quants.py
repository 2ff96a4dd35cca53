"""Quantizers and dequantizers against independent implementations: gguf-py's numpy code (tested
bit for bit against ggml's C by its authors) for Q8_0/TQ1_0/TQ2_0 and every decoder, and BitNet's
own C quantizer for I2_S (tests/vectors/i2s: the team's reference vectors, with their index.json).
The AVX2 and the scalar kernels must give the same bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyconv
from pyconv import _core, dtypes
from pyconv.errors import ConversionError
from pyconv.quants import describe_difference

from .test_kernels_cast import kernel_path  # noqa: F401  (runs a test on the AVX2 and on the scalar path)
from .test_kquants import TYPES as GGML_QUANTIZED

VECTORS = Path(__file__).parent / "vectors" / "i2s"
GGUF_QUANTIZED = ["q8_0", "tq1_0", "tq2_0"]
SIMD_QUANTIZED = ["q8_0", "tq2_0", "i2_s"]
ONE_BLOCK = {"q8_0": 32, "tq2_0": 256, "i2_s": 128}
DECODED = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4"]
F32 = np.float32
THRESHOLD = F32(1e-6)  # BitNet's |x| < 1e-6, compared in double


def qtype(name: str) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType[name.upper()]


def gguf_quantize(x: np.ndarray, name: str) -> bytes:
    with np.errstate(over="ignore", invalid="ignore"):  # f16 overflow and NaN casts belong to the cases
        return gguf.quants.quantize(x, qtype(name)).tobytes()


def gguf_dequantize(data: bytes, name: str, shape: tuple[int, ...]) -> np.ndarray:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype(name)]
    rows = np.frombuffer(data, np.uint8).reshape(shape[0], shape[1] // block_elems * block_bytes)
    with np.errstate(over="ignore", invalid="ignore"):
        return gguf.quants.dequantize(rows, qtype(name))


def ties(rng: np.random.Generator) -> np.ndarray:
    """Rows where x / d lands exactly on .5: Q8_0 blocks with d = 0.25 (absmax 127 * 0.25) and
    elements (k + 0.5) * 0.25; TQ blocks with absmax 4 and elements of +-2 (x / d = +-0.5)."""
    q8 = (rng.integers(-127, 127, (4, 512)) + 0.5) * 0.25
    q8[:, ::32] = 127 * 0.25
    tq = rng.choice([-2.0, 2.0, -1.0, 1.0, 3.0, -3.0, 0.0], (4, 512))
    tq[:, ::256] = -4.0
    return np.concatenate([q8, tq]).astype(F32)


def quant_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    normal = rng.standard_normal((32, 512)).astype(F32)
    zero_blocks = normal[:8].copy()
    zero_blocks[:, 256:] = 0.0
    zero_blocks[2] = -0.0
    tiny = normal[:8] * F32(1e-30)
    tiny[2:4] *= F32(1e-9)  # subnormal blocks: 1 / absmax overflows
    tiny[4, :32] = 1e-45
    huge = rng.uniform(-3.4e38, 3.4e38, (8, 512)).astype(F32)
    huge[4:] = normal[:4] * F32(1e30)
    mixed = normal[:8] * F32(10.0) ** rng.integers(-30, 30, (8, 1)).astype(F32)
    nonfinite = normal[:8].copy()
    nonfinite[0, 5], nonfinite[1, 300], nonfinite[2, 40], nonfinite[3, :] = np.inf, -np.inf, np.nan, np.nan
    return {
        "normal": normal,
        "ternary_0.4372": (rng.integers(-1, 2, (16, 512)) * F32(0.4372)).astype(F32),
        "ternary_0.5": (rng.integers(-1, 2, (16, 512)) * F32(0.5)).astype(F32),
        "zero_blocks": zero_blocks,
        "ties": ties(rng),
        "tiny": tiny,
        "huge": huge,
        "mixed_magnitudes": mixed,
        "inf_and_nan": nonfinite,
    }


CASES = quant_cases()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", GGUF_QUANTIZED)
def test_quantize_matches_gguf(name: str, case: str, kernel_path: str) -> None:
    x = CASES[case]
    got, want = pyconv.quantize(x, name), gguf_quantize(x, name)
    assert got == want, describe_difference(got, want, name)


def test_quantize_rounds_ties_away_from_zero() -> None:
    """The tie rows really are ties, and they land where roundf puts them."""
    x = ties(np.random.default_rng(0))
    q8 = np.frombuffer(pyconv.quantize(x[:4], "q8_0"), np.uint8).reshape(-1, 34)
    assert np.array_equal(q8[:, 2:].view(np.int8), np.sign(x[:4]).reshape(-1, 32) * np.ceil(np.abs(x[:4] * 4)).reshape(-1, 32))
    values = pyconv.dequantize(pyconv.quantize(x[4:], "tq2_0"), "tq2_0", x[4:].shape)
    assert np.array_equal(values, np.sign(x[4:]) * 4 * (np.abs(x[4:]) >= 2))


@pytest.mark.parametrize("name", DECODED)
def test_dequantize_matches_gguf_on_random_blocks(name: str) -> None:
    """Random bytes reach every code, scale and minimum pattern, f16 NaN and Inf included."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype(name)]
    shape = (16, 4 * block_elems)
    data = np.random.default_rng(len(name)).integers(0, 256, shape[0] * shape[1] // block_elems * block_bytes, np.uint8).tobytes()
    got, want = pyconv.dequantize(data, name, shape), gguf_dequantize(data, name, shape)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name", GGUF_QUANTIZED)
def test_round_trip_matches_gguf(name: str) -> None:
    x = CASES["normal"]
    data = gguf_quantize(x, name)
    assert np.array_equal(pyconv.dequantize(data, name, x.shape), gguf_dequantize(data, name, x.shape))


def test_every_decoder_is_tested() -> None:
    known = [n for n in [t.name.lower() for t in gguf.GGMLQuantizationType] + ["i2_s"] if n in dtypes.TYPES]
    assert {n for n in known if dtypes.row(n).can_dequantize} == set(DECODED) | {"i2_s"}
    # the searching quantizers are tested against llama.cpp itself in test_kquants.py
    assert {n for n in known if dtypes.row(n).can_quantize} == set(GGUF_QUANTIZED) | {"i2_s"} | set(GGML_QUANTIZED)


def i2s_cases() -> list[str]:
    return [c["name"] for c in json.loads((VECTORS / "index.json").read_text())["cases"]]


@pytest.mark.parametrize("case", i2s_cases())
def test_i2s_matches_bitnet_vectors(case: str, kernel_path: str) -> None:
    x = np.load(VECTORS / f"{case}.input.npy")
    want = (VECTORS / f"{case}.i2s").read_bytes()
    got = pyconv.quantize(x, "i2_s")
    assert got == want, describe_difference(got, want, "i2_s")
    # the vectors are ternary, so decoding gives them back, entries under BitNet's threshold as 0
    assert np.array_equal(pyconv.dequantize(want, "i2_s", x.shape), np.where(np.abs(x) < THRESHOLD, F32(0), x))


def test_i2s_decodes_as_bitnets_reader() -> None:
    """Codes 0, 1, 2, 3 read as -1, 0, +1, 0 times the scale after the packed bytes (docs/i2s.md),
    four 32-element groups per 32-byte block, most significant bits first."""
    rng = np.random.default_rng(4)
    packed = rng.integers(0, 256, 3 * 256 // 4, np.uint8)
    scale = F32(0.4372)
    data = packed.tobytes() + scale.tobytes() + bytes(28)
    codes = (packed.reshape(-1, 1, 32) >> np.array([6, 4, 2, 0], np.uint8).reshape(1, 4, 1)) & 3
    want = np.array([-1, 0, 1, 0], F32)[codes.reshape(3, 256)] * scale
    assert np.array_equal(pyconv.dequantize(data, "i2_s", (3, 256)), want)


def test_i2s_zero_threshold_is_bitnets_double_comparison(kernel_path: str) -> None:
    edge = [np.nextafter(THRESHOLD, F32(0)), THRESHOLD, np.nextafter(THRESHOLD, F32(1)), F32(1e-7), F32(0), F32(-0.0)]
    row = np.resize(np.array(edge + [-v for v in edge] + [F32(0.5), F32(-0.5)], F32), 128)
    x = np.stack([row, row[::-1]])
    codes = np.where(np.abs(x.astype(np.float64)) < 1e-6, 1, np.where(x > 0, 2, 0))
    packed = np.frombuffer(pyconv.quantize(x, "i2_s")[:64], np.uint8).reshape(2, 1, 32)
    unpacked = (packed >> np.array([6, 4, 2, 0], np.uint8).reshape(1, 4, 1)) & 3
    assert np.array_equal(unpacked.reshape(2, 128), codes)


SPECIAL = [float(F32(v)) for v in [0.0, -0.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 1.0, -1.0, 1.5, 126.5, 3e38, -3e38,
                                   1e-40, -1e-45, THRESHOLD, np.nextafter(THRESHOLD, F32(1)), np.nextafter(THRESHOLD, F32(0))]]
ELEMENTS = st.one_of(st.floats(width=32), st.sampled_from(SPECIAL))


def both_paths(quantize: Callable[[], bytes]) -> tuple[bytes, bytes]:
    _core.set_simd_enabled(False)
    try:
        scalar = quantize()
    finally:
        _core.set_simd_enabled(True)
    assert _core.simd_level() == "avx2", "this x86-64 test machine is expected to have AVX2/F16C"
    return scalar, quantize()


@pytest.mark.parametrize("name", SIMD_QUANTIZED)
@settings(max_examples=150, deadline=None)
@given(x=hnp.arrays(F32, st.integers(1, 3).map(lambda k: (k, 256)), elements=ELEMENTS))
def test_simd_and_scalar_bytes_are_identical(name: str, x: np.ndarray) -> None:
    # whole rows of 256, then rows of one block, which leave the SIMD kernels partial groups of blocks
    for part in (x, np.ascontiguousarray(x[:, :ONE_BLOCK[name]])):
        scalar, simd = both_paths(lambda: pyconv.quantize(part, name))
        assert simd == scalar, describe_difference(simd, scalar, name)


def nan_payloads() -> np.ndarray:
    """NaNs other than numpy's: the block scale rules (not the SIMD lanes) must decide their bytes."""
    x = CASES["normal"][:4].copy()
    bits = x.view(np.uint32)
    bits[0, 3], bits[1, 300], bits[2, 7], bits[3, 260] = 0x7FFFFFFF, 0xFFA00000, 0x7F800001, 0xFFC00001
    return x


@pytest.mark.parametrize("name", SIMD_QUANTIZED)
def test_simd_and_scalar_agree_on_every_case(name: str) -> None:
    for case, x in {**CASES, "nan_payloads": nan_payloads()}.items():
        scalar, simd = both_paths(lambda: pyconv.quantize(x, name))
        assert simd == scalar, f"{case}: {describe_difference(simd, scalar, name)}"


def test_diff_message_points_at_the_first_differing_block() -> None:
    x = np.load(VECTORS / "proj_like_160x640.input.npy")
    want = (VECTORS / "proj_like_160x640.i2s").read_bytes()
    bad = bytearray(want)
    bad[32 * 9 + 17] ^= 0x04
    bad[32 * 400] ^= 0x40
    message = describe_difference(bytes(bad), want, "i2_s")
    assert message.startswith("i2_s: 2 of 801 blocks differ; the first is block 9 (elements 1152..1279, bytes 288..319)")
    assert "first at its byte 17" in message and "\n" not in message
    tail = bytearray(want)
    tail[-28] = 1  # the filler after the scale
    assert "the tail" in describe_difference(bytes(tail), want, "i2_s")
    q8 = pyconv.quantize(x, "q8_0")
    assert "block 3 (elements 96..127, bytes 102..135)" in describe_difference(q8[:110] + b"\0" + q8[111:], q8, "q8_0")
    assert describe_difference(want, want, "i2_s") == ""


@pytest.mark.parametrize(("call", "text"), [
    (lambda: pyconv.quantize(np.zeros(256, F32), "i2_s"), "i2_s needs a 2-d tensor"),
    (lambda: pyconv.quantize(np.zeros((4, 200), F32), "i2_s"), "rows of 200 elements do not fit i2_s blocks of 128"),
    (lambda: pyconv.quantize(np.zeros((4, 200), F32), "q8_0"), "rows of 200 elements do not fit q8_0 blocks of 32"),
    (lambda: pyconv.quantize(np.zeros((2, 384), F32), "tq2_0"), "rows of 384 elements do not fit tq2_0 blocks of 256"),
    (lambda: pyconv.quantize(F32(1.0), "q8_0"), "needs at least one dimension"),
    (lambda: pyconv.quantize(np.zeros(256, F32), "iq2_xs"), "cannot quantize to iq2_xs"),
    (lambda: pyconv.quantize(np.zeros((2, 256), F32), "q4_k", importance=np.ones(64)), "one value per column (256)"),
    (lambda: pyconv.quantize(np.zeros(256, F32), "q9_9"), "unknown type 'q9_9'"),
    (lambda: pyconv.dequantize(b"\0" * 100, "q8_0", (4, 32)), "takes 136 bytes, got 100"),
    (lambda: pyconv.dequantize(b"\0" * 64, "i2_s", (2, 128)), "takes 96 bytes, got 64"),
    (lambda: pyconv.dequantize(b"\0" * 4, "f16", (2,)), "cannot decode f16"),
])
def test_bad_input_is_a_one_line_conversion_error(call: Callable[[], object], text: str) -> None:
    with pytest.raises(ConversionError) as e:
        call()
    assert text in str(e.value) and "\n" not in str(e.value)
