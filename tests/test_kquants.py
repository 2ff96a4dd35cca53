"""The legacy, K and IQ4 quantizers against llama.cpp's own: bytes equal to ``ggml_quantize_chunk``
from the libggml-base.so that llama-cpp-python installs (called through ctypes), with and without
importance weights, on random rows and on edge blocks; decoders against gguf-py's
``gguf.quants.dequantize``."""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

import pyconv
from pyconv.quants import describe_difference

from .test_kernels_cast import kernel_path  # noqa: F401  (runs a test on the AVX2 and on the scalar path)

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"]
N_PER_ROW = 512  # two 256-element super-blocks, sixteen 32-element blocks
F32 = np.float32


def qtype(name: str) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType[name.upper()]


@pytest.fixture(scope="session")
def ggml() -> ctypes.CDLL:
    """llama.cpp's ggml-base library as llama-cpp-python ships it."""
    found = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-base.so*"))
    assert found, f"no libggml-base.so in {Path(llama_cpp.__file__).parent / 'lib'}"
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def ggml_quantize(lib: ctypes.CDLL, x: np.ndarray, name: str, importance: np.ndarray | None) -> bytes:
    t = qtype(name)
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[t]
    out = np.zeros(x.size // block_elems * block_bytes, np.uint8)
    written = lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1],
                                      None if importance is None else importance.ctypes.data)
    assert written == out.size
    return out.tobytes()


def edge_rows(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows of N_PER_ROW floats, each a case a quantizer's search can get wrong."""
    normal = rng.standard_normal(N_PER_ROW)
    huge = rng.standard_normal(N_PER_ROW)
    huge[[5, 300]] = [1e4, -3e4]
    extremes = rng.choice([-1.0, 1.0], N_PER_ROW) * rng.uniform(0.5, 1.0, N_PER_ROW) * np.finfo(F32).max
    mixed = normal * np.repeat(10.0 ** rng.integers(-30, 30, N_PER_ROW // 32), 32)
    sparse = np.where(rng.random(N_PER_ROW) < 0.9, 0.0, normal)
    rows = {
        "normal": normal,
        "normal, small": normal * 1e-3,
        "normal, large": normal * 300.0,
        "uniform": rng.uniform(-1.0, 1.0, N_PER_ROW),
        "all zero": np.zeros(N_PER_ROW),
        "negative zeros": np.full(N_PER_ROW, -0.0),
        "one huge value": huge,
        "extremes of f32": extremes,
        "subnormals": rng.standard_normal(N_PER_ROW) * 1e-40,
        "tiny, near f16's smallest": normal * 1e-7,
        "constant": np.full(N_PER_ROW, 0.7),
        "negative constant": np.full(N_PER_ROW, -2.5),
        "negative only": -np.abs(normal),
        "positive only": np.abs(normal) + 1.0,
        "block magnitudes 1e-30..1e30": mixed,
        "mostly zero": sparse,
        "integers": rng.integers(-8, 8, N_PER_ROW).astype(float),
    }
    return {k: v.astype(F32) for k, v in rows.items()}


@pytest.fixture(scope="module")
def cases() -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(13)
    rows = edge_rows(rng)
    importance = {
        "none": None,
        "random": (rng.random(N_PER_ROW) ** 3).astype(F32),
        "with zero columns": np.where(rng.random(N_PER_ROW) < 0.3, 0.0, rng.exponential(5.0, N_PER_ROW)).astype(F32),
        "uniform ones": np.ones(N_PER_ROW, F32),
    }
    return np.stack(list(rows.values())), list(rows), importance


def first_bad_row(got: bytes, want: bytes, names: list[str], name: str) -> str:
    row_bytes = len(want) // len(names)
    for i, case in enumerate(names):
        g, w = got[i * row_bytes:(i + 1) * row_bytes], want[i * row_bytes:(i + 1) * row_bytes]
        if g != w:
            return f"row {case!r}: {describe_difference(g, w, name)}"
    return ""


@pytest.mark.parametrize("name", TYPES)
def test_quantizer_writes_ggml_quantize_chunk_bytes(ggml: ctypes.CDLL, cases: tuple, name: str, kernel_path: str) -> None:
    x, names, importance = cases
    assert not ggml.ggml_quantize_requires_imatrix(int(qtype(name)))
    for label, weights in importance.items():
        want = ggml_quantize(ggml, x, name, weights)
        got = pyconv.quantize(x, name, importance=weights)
        assert got == want, f"importance {label}: {first_bad_row(got, want, names, name)}"
        # row by row gives the same bytes: nothing carries over from one row to the next
        if label == "random":
            assert b"".join(pyconv.quantize(r[None], name, importance=weights) for r in x) == want


@pytest.mark.parametrize("name", TYPES)
def test_importance_changes_what_the_weighted_types_write(cases: tuple, name: str) -> None:
    x, _, importance = cases
    plain = pyconv.quantize(x[:4], name)
    weighted = pyconv.quantize(x[:4], name, importance=importance["random"])
    assert plain != weighted


@pytest.mark.parametrize("name", TYPES)
def test_decoder_equals_gguf_py(ggml: ctypes.CDLL, cases: tuple, name: str) -> None:
    x, _, importance = cases
    finite = x[np.abs(x).max(axis=1) < 1e30]
    data = ggml_quantize(ggml, finite, name, importance["random"])
    blocks = np.frombuffer(data, np.uint8).reshape(finite.shape[0], -1)
    with np.errstate(over="ignore", invalid="ignore"):
        want = gguf.quants.dequantize(blocks, qtype(name))
    got = pyconv.dequantize(data, name, finite.shape)
    assert got.tobytes() == want.astype(F32).tobytes()



# llama.cpp's types for rows that do not fit a type's blocks (llama-quant.cpp: tensor_type_fallback)
FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0", "iq4_xs": "iq4_nl"}
# general.file_type as llama-quantize records it; its Q3_K, Q4_K and Q5_K stand for the _M mixes
FILE_TYPE = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q2_k": "Q2_K", "q3_k": "Q3_K_M",
             "q4_k": "Q4_K_M", "q5_k": "Q5_K_M", "q6_k": "Q6_K", "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS"}


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A one-layer llama written by transformers, rows of 256 (one super-block) except ffn_down's 320,
    pyconv's F32 GGUF of it, and that file's tensors (llama.cpp's names and row order)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .archs_fixtures import train_sentencepiece

    out = tmp_path_factory.mktemp("wide-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=train_sentencepiece(out, gemma=False), hidden_size=256, intermediate_size=320,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    f32 = out.parent / "wide-llama-f32.gguf"
    pyconv.convert(out, f32, outtype="f32")
    tensors = {t.name: np.array(t.data, np.float32).reshape([int(d) for d in reversed(t.shape)])
               for t in gguf.GGUFReader(f32).tensors}
    return out, f32, tensors


@pytest.mark.parametrize("name", TYPES)
def test_gguf_outtype_writes_llama_cpp_types_and_bytes(ggml: ctypes.CDLL, wide_llama: tuple, tmp_path: Path,
                                                       name: str) -> None:
    folder, _, source = wide_llama
    out = tmp_path / f"m-{name}.gguf"
    pyconv.convert(folder, out, outtype=name)
    reader = gguf.GGUFReader(out)
    ftype = reader.fields["general.file_type"]
    assert int(ftype.parts[ftype.data[0]][0]) == gguf.LlamaFileType[f"MOSTLY_{FILE_TYPE[name]}"]
    for t in reader.tensors:
        x = source[t.name]
        if x.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            continue
        fits = x.shape[1] % gguf.GGML_QUANT_SIZES[qtype(name)][0] == 0
        want_type = name if fits else FALLBACK.get(name, "f16")
        assert t.tensor_type == qtype(want_type), t.name
        assert bytes(t.data) == ggml_quantize(ggml, x, want_type, None) == pyconv.quantize(x, want_type), t.name
    assert {t.name for t in reader.tensors if t.tensor_type != qtype(name) and len(t.shape) > 1} == (
        {"blk.0.ffn_down.weight"} if name in FALLBACK else set())


@pytest.mark.parametrize("name", TYPES)
def test_pure_file_equals_llama_quantize(wide_llama: tuple, tmp_path: Path, name: str) -> None:
    """One pass from the HF folder gives the file llama.cpp's quantizer makes with --pure from the F32
    GGUF of the same folder: every tensor's type and bytes, and general.file_type."""
    folder, f32, _ = wide_llama
    ours, theirs = tmp_path / "pyconv.gguf", tmp_path / "llama.gguf"
    pyconv.convert(folder, ours, outtype=name)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(gguf.LlamaFileType[f"MOSTLY_{FILE_TYPE[name]}"])
    params.pure = True
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs).encode(), ctypes.byref(params)) == 0
    got, want = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    assert [f.parts[-1][0] for f in (got.fields["general.file_type"], want.fields["general.file_type"])] == [params.ftype] * 2
    want_tensors = {t.name: t for t in want.tensors}
    assert sorted(want_tensors) == sorted(t.name for t in got.tensors)
    for t in got.tensors:
        w = want_tensors[t.name]
        assert (t.tensor_type, bytes(t.data)) == (w.tensor_type, bytes(w.data)), t.name
