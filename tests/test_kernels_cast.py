"""Casts are bit-exact with numpy (f16) and torch (bf16), on the SIMD and the scalar path."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pyconv import _core

ALL16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)
SPECIAL_F32 = np.array(
    [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FA00000,
     0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x807FFFFF, 0x00800000,
     0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,     # around f16 max (65504) and the overflow threshold
     0x33000000, 0x33000001, 0x337FFFFF, 0x387FFFFF, 0x38800000, 0x38FFFFFF,  # f16 subnormal edges
     0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7F8000],    # bf16 ties and round-up to Inf
    dtype=np.uint32)


@pytest.fixture(params=["avx2", "scalar"])
def kernel_path(request: pytest.FixtureRequest) -> Iterator[str]:
    _core.set_simd_enabled(request.param == "avx2")
    if request.param == "avx2" and _core.simd_level() != "avx2":
        pytest.fail("this x86-64 test machine is expected to have AVX2/F16C")
    yield request.param
    _core.set_simd_enabled(True)


def ours(data: np.ndarray, src: str, dst: str, out: type[np.generic]) -> np.ndarray:
    return np.frombuffer(_core.cast(np.ascontiguousarray(data), src, dst), dtype=out)


def torch_bits(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.int16).numpy().view(np.uint16) if t.dtype in (torch.bfloat16, torch.float16) \
        else t.contiguous().view(torch.int32).numpy().view(np.uint32)


def f32_inputs() -> np.ndarray:
    rng = np.random.default_rng(1)
    rand = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    widened_f16 = ALL16.view(np.float16).astype(np.float32).view(np.uint32)
    widened_bf16 = ALL16.astype(np.uint32) << 16
    halfway = (ALL16.astype(np.uint32) << 16) | 0x8000  # every bf16 tie
    return np.concatenate([SPECIAL_F32, rand, widened_f16, widened_bf16, halfway, widened_f16 + 1, widened_f16 - 1])


def test_f16_to_f32_all_patterns(kernel_path: str) -> None:
    assert np.array_equal(ours(ALL16, "f16", "f32", np.uint32), ALL16.view(np.float16).astype(np.float32).view(np.uint32))


def test_bf16_to_f32_all_patterns(kernel_path: str) -> None:
    ref = torch_bits(torch.from_numpy(ALL16.view(np.int16).copy()).view(torch.bfloat16).float())
    assert np.array_equal(ours(ALL16, "bf16", "f32", np.uint32), ref)


def test_f32_to_f16_matches_numpy_including_nan_payloads(kernel_path: str) -> None:
    x = f32_inputs()
    with np.errstate(all="ignore"):
        ref = x.view(np.float32).astype(np.float16).view(np.uint16)
    assert np.array_equal(ours(x, "f32", "f16", np.uint16), ref)


def test_f32_to_bf16_matches_torch_and_keeps_nan(kernel_path: str) -> None:
    x = f32_inputs()
    got = ours(x, "f32", "bf16", np.uint16)
    ref = torch_bits(torch.from_numpy(x.view(np.float32).copy()).to(torch.bfloat16))
    nan = np.isnan(x.view(np.float32))
    assert np.array_equal(got[~nan], ref[~nan])
    # torch writes 0xffff for every NaN; we keep sign and top payload and make it quiet, as ggml does
    assert np.array_equal(got[nan], ((x[nan] >> 16) | 0x40).astype(np.uint16))


def test_f16_bf16_both_ways_all_patterns(kernel_path: str) -> None:
    f16 = torch.from_numpy(ALL16.view(np.int16).copy()).view(torch.float16)
    bf16 = torch.from_numpy(ALL16.view(np.int16).copy()).view(torch.bfloat16)
    nan16, nanb = torch.isnan(f16).numpy(), torch.isnan(bf16).numpy()
    assert np.array_equal(ours(ALL16, "f16", "bf16", np.uint16)[~nan16], torch_bits(f16.to(torch.bfloat16))[~nan16])
    got = ours(ALL16, "bf16", "f16", np.uint16)
    assert np.array_equal(got[~nanb], torch_bits(bf16.to(torch.float16))[~nanb])
    with np.errstate(all="ignore"):  # NaNs: as numpy narrows the widened value
        assert np.array_equal(got, (ALL16.astype(np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16))


def test_nan_stays_nan_everywhere(kernel_path: str) -> None:
    nan32 = SPECIAL_F32[np.isnan(SPECIAL_F32.view(np.float32))]
    for dst in ("f16", "bf16"):
        back = ours(ours(nan32, "f32", dst, np.uint16), dst, "f32", np.uint32).view(np.float32)
        assert np.isnan(back).all()
    nan16 = ALL16[np.isnan(ALL16.view(np.float16))]
    assert np.isnan(ours(ours(nan16, "f16", "bf16", np.uint16), "bf16", "f32", np.uint32).view(np.float32)).all()


def test_f64_to_f16_single_rounding_as_numpy() -> None:
    rng = np.random.default_rng(2)
    d = rng.standard_normal(200_000) * 10.0 ** rng.integers(-12, 7, 200_000)
    edges = [np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 2.0**-25, 2.0**-25 * (1 + 2**-40), 2.0**-24 * 1.5,
             1 + 2.0**-11, 1 + 2.0**-11 + 2.0**-40, 5e-324, -0.0]
    d = np.concatenate([d, edges])
    with np.errstate(all="ignore"):
        assert np.array_equal(ours(d, "f64", "f16", np.uint16), d.astype(np.float16).view(np.uint16))


def test_f64_to_f32_and_bf16_as_torch() -> None:
    d = np.random.default_rng(3).standard_normal(10_000) * 1e3
    assert np.array_equal(ours(d, "f64", "f32", np.uint32), d.astype(np.float32).view(np.uint32))
    assert np.array_equal(ours(d, "f64", "bf16", np.uint16), torch_bits(torch.from_numpy(d).to(torch.bfloat16)))


def test_unsupported_pair_is_a_clear_error() -> None:
    with pytest.raises(_core.CoreError, match="cannot cast i32 to f16"):
        _core.cast(np.zeros(4, np.int32), "i32", "f16")


def test_a_strided_buffer_is_refused_not_read_as_if_contiguous() -> None:
    """A view with gaps holds size × itemsize bytes of elements spread further apart; copying that
    many bytes from its start would cast the wrong elements, and past the end for long strides."""
    x = np.arange(16, dtype=np.float32)
    with pytest.raises(_core.CoreError, match="contiguous"):
        _core.cast(x[::2], "f32", "f16")
    with pytest.raises(_core.CoreError, match="contiguous"):
        _core.cast(x.reshape(4, 4).T, "f32", "f16")
    # a contiguous view that does not start at its base's start is fine
    assert np.array_equal(ours(x[3:11], "f32", "f16", np.float16), x[3:11].astype(np.float16))


def test_bytes_that_are_not_whole_elements_are_refused() -> None:
    with pytest.raises(_core.CoreError, match="whole number of f32 elements"):
        _core.cast(b"\0" * 6, "f32", "f16")
