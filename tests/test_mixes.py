"""llama-quantize's file types (Q4_K_M, Q5_K_S, ...) and its options, against llama.cpp's own quantizer.

The reference is ``llama_model_quantize`` from llama-cpp-python run on pyconv's F32 GGUF of the same
model; pyconv's file, made in one pass from the HF folder (or by ``pyconv quantize`` from a GGUF),
must hold the same tensors with the same types and bytes, and the same ``general.file_type``.
"""

from __future__ import annotations

import ctypes
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

import pyconv
from pyconv.gguf_mixes import FILE_TYPES
from pyconv.validate import validate

from .archs_fixtures import CORPUS, save_model, train_sentencepiece
from .conftest import REPO, run_cli

MIXES = [name for name, ft in FILE_TYPES.items() if not ft.pure and name != "q2_k_s"]


def ggml_type(name: str) -> int:
    return int(gguf.GGMLQuantizationType[name.upper()])


def llama_quantize(src: Path, dst: Path, file_type: str, *, output_tensor_type: str | None = None,
                   token_embedding_type: str | None = None, pure: bool = False, leave_output_tensor: bool = False,
                   tensor_types: tuple[str, ...] = (), allow_requantize: bool = False) -> Path:
    """llama.cpp's quantizer, through llama-cpp-python's binding of ``llama_model_quantize``."""
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.pure, p.allow_requantize = FILE_TYPES[file_type].number, 2, pure, allow_requantize
    p.quantize_output_tensor = not leave_output_tensor
    if output_tensor_type:
        p.output_tensor_type = ggml_type(output_tensor_type)
    if token_embedding_type:
        p.token_embedding_type = ggml_type(token_embedding_type)
    if tensor_types:
        pairs = [t.split("=") for t in tensor_types]
        overrides = (llama_cpp.llama_model_tensor_override * (len(pairs) + 1))(
            *(llama_cpp.llama_model_tensor_override(k.encode(), ggml_type(v)) for k, v in pairs))
        p.tt_overrides = overrides
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) == 0
    return dst


def tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def file_type_of(path: Path) -> int:
    return int(gguf.GGUFReader(path).fields["general.file_type"].contents())


def assert_same_file(got: Path, want: Path) -> None:
    g, w = tensors(got), tensors(want)
    assert sorted(g) == sorted(w)
    types = {n: (g[n][0], w[n][0]) for n in w if g[n][0] != w[n][0]}
    assert not types, f"{len(types)} tensors typed differently (pyconv, llama.cpp), e.g. {sorted(types.items())[:4]}"
    data = [n for n in w if g[n][1] != w[n][1]]
    assert not data, f"{len(data)} tensors with other bytes, e.g. {data[:4]}"
    assert file_type_of(got) == file_type_of(want)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A llama whose rows are multiples of 256 (so no fallbacks), 16 layers (every layer rule has
    layers on both sides), 4 query heads per key head and its own output matrix: its HF folder
    and pyconv's F32 GGUF of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("mix-llama")
    cfg = LlamaConfig(vocab_size=train_sentencepiece(folder, gemma=False), hidden_size=256, intermediate_size=512,
                      num_hidden_layers=16, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    save_model(LlamaForCausalLM, cfg, folder, seed=13)
    f32 = folder.parent / "mix-llama-f32.gguf"
    pyconv.convert(folder, f32, outtype="f32", progress=False, fingerprint=False)
    return folder, f32


@pytest.fixture(scope="module")
def smollm2_f32(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix-smollm2") / "smollm2-f32.gguf"
    pyconv.convert(smollm2_hf, out, outtype="f32", progress=False, fingerprint=False)
    return out


def one_pass(src: Path, out: Path, outtype: str, **options: Any) -> Path:
    pyconv.convert(src, out, outtype=outtype, progress=False, fingerprint=False, **options)
    return out


@pytest.mark.parametrize("file_type", MIXES)
def test_file_type_equals_llama_quantize(tiny: tuple[Path, Path], tmp_path: Path, file_type: str) -> None:
    folder, f32 = tiny
    want = llama_quantize(f32, tmp_path / "ref.gguf", file_type)
    assert_same_file(one_pass(folder, tmp_path / "pyconv.gguf", file_type), want)


@pytest.mark.parametrize("file_type", ["q4_k_m"])
def test_smollm2_rows_of_576_fall_back_as_llama_quantize(smollm2_hf: Path, smollm2_f32: Path, tmp_path: Path,
                                                         file_type: str) -> None:
    want = llama_quantize(smollm2_f32, tmp_path / "ref.gguf", file_type)
    ours = one_pass(smollm2_hf, tmp_path / "pyconv.gguf", file_type)
    assert_same_file(ours, want)
    # llama.cpp runs the one-pass file, and validate reports how far its logits are from transformers'
    report = validate(ours, reference=smollm2_hf)
    checks = {c.name: c for c in report.checks}
    assert checks["runtime"].status == "pass" and "Paris" in checks["runtime"].data["continuation"]
    assert checks["reference"].status == "pass", checks["reference"].detail
    assert "at least 60% for this file's bits per weight" in checks["reference"].detail


OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("q4_k", {"pure": True}),
    ("q4_k_m", {"pure": True}),
    ("q5_k_m", {"output_tensor_type": "q8_0", "token_embedding_type": "q8_0"}),
    ("q4_k_m", {"tensor_types": ("ffn_down=q6_k", "attn_v=q8_0", r"blk\.1[0-5]\.attn_q=q5_0")}),
    ("q3_k_m", {"leave_output_tensor": True}),
]


@pytest.mark.parametrize("file_type, options", OPTIONS, ids=[f"{t}-{'-'.join(o)}" for t, o in OPTIONS])
def test_options_equal_llama_quantize(tiny: tuple[Path, Path], tmp_path: Path, file_type: str, options: dict[str, Any]) -> None:
    folder, f32 = tiny
    reference = {**options, "pure": options.get("pure", False) or FILE_TYPES[file_type].pure}
    want = llama_quantize(f32, tmp_path / "ref.gguf", file_type, **reference)
    assert_same_file(one_pass(folder, tmp_path / "pyconv.gguf", file_type, **options), want)


@pytest.mark.parametrize("source_type", ["f16", "bf16"])
def test_pyconv_quantize_takes_a_float_gguf(tiny: tuple[Path, Path], tmp_path: Path, cli: Callable[..., Any],
                                            source_type: str) -> None:
    src = one_pass(tiny[0], tmp_path / f"{source_type}.gguf", source_type)
    want = llama_quantize(src, tmp_path / "ref.gguf", "q5_k_s", leave_output_tensor=True)
    r = cli("quantize", src, "-o", tmp_path / "pyconv.gguf", "--outtype", "q5_k_s", "--leave-output-tensor", "-q")
    assert r.returncode == 0, r.stderr
    assert_same_file(tmp_path / "pyconv.gguf", want)


def test_requantizing_needs_allow_requantize(tiny: tuple[Path, Path], tmp_path: Path, cli: Callable[..., Any]) -> None:
    src = one_pass(tiny[0], tmp_path / "q4_k_m.gguf", "q4_k_m")
    r = cli("quantize", src, "-o", tmp_path / "out.gguf", "--outtype", "q6_k")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--allow-requantize" in r.stderr
    assert not (tmp_path / "out.gguf").exists()
    r = cli("quantize", src, "-o", tmp_path / "out.gguf", "--outtype", "q6_k", "--allow-requantize", "-q")
    assert r.returncode == 0, r.stderr
    want = llama_quantize(src, tmp_path / "ref.gguf", "q6_k", allow_requantize=True)
    assert {n: t for n, (t, _) in tensors(tmp_path / "out.gguf").items()} == {n: t for n, (t, _) in tensors(want).items()}


def test_dry_run_shows_each_type_and_why(tiny: tuple[Path, Path], cli: Callable[..., Any], tmp_path: Path) -> None:
    r = cli("convert", tiny[0], "-o", tmp_path / "m.gguf", "--outtype", "q4_k_m", "--dry-run")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(("blk.", "output.", "token_embd."))}
    assert " q6_k " in rows["blk.0.attn_v.weight"] and "layer that gets more bits" in rows["blk.0.attn_v.weight"]
    assert " q4_k " in rows["blk.3.attn_v.weight"] and "default q4_k" in rows["blk.3.attn_v.weight"]
    assert " q6_k " in rows["output.weight"] and "output: q6_k" in rows["output.weight"]
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("args, message", [
    (["--outtype", "q2_k_s"], "q2_k_s needs an importance matrix"),
    (["--outtype", "f16", "--pure"], "--pure needs one of llama-quantize's file types"),
    (["--outtype", "q8_0", "--output-tensor-type", "q6_k"], "--output-tensor-type needs one of llama-quantize's file types"),
    (["--outtype", "q4_k_m", "--tensor-type", "attn_v"], "--tensor-type 'attn_v' is not PATTERN=TYPE"),
    (["--outtype", "q4_k_m", "--tensor-type", "attn_v=q9_k"], "--tensor-type q9_k: not a llama.cpp type"),
    (["--outtype", "q4_k_m", "--tensor-type", "(attn=q6_k"], "is not a regular expression"),
    (["--outtype", "q4_k_m", "--token-embedding-type", "i2_s"], "--token-embedding-type i2_s: not a llama.cpp type"),
    (["--outtype", "q4_k_x"], "--outtype q4_k_x is not a GGUF type"),
])
def test_bad_options_are_one_line_errors(tiny: tuple[Path, Path], cli: Callable[..., Any], tmp_path: Path,
                                         args: list[str], message: str) -> None:
    r = run_cli("quantize", tiny[1], "-o", tmp_path / "out.gguf", *args)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "out.gguf").exists()


# --- importance matrices -------------------------------------------------------------------------

HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def activations(tiny: tuple[Path, Path]) -> dict[str, tuple[np.ndarray, int]]:
    """What llama-imatrix collects, measured with transformers: per linear layer (GGUF name), the
    sum over tokens of each input column squared, and the token count."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny[0], torch_dtype=torch.float32).eval()
    sums: dict[str, tuple[np.ndarray, int]] = {}

    def hook(name: str) -> Any:
        def record(_module: Any, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            s, n = sums.get(name, (np.zeros(x.shape[-1]), 0))
            sums[name] = (s + (x * x).sum(0).numpy(), n + x.shape[0])
        return record

    for hf, module in model.named_modules():
        if hf == "lm_head":
            module.register_forward_hook(hook("output.weight"))
        for part, kind in HF_TO_GGUF.items():
            if hf.endswith(part):
                module.register_forward_hook(hook(f"blk.{hf.split('.')[2]}.{kind}.weight"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model(torch.randint(0, model.config.vocab_size, (4, 32), generator=gen))
    return sums


def weights(s: np.ndarray, n: int) -> np.ndarray:
    """An entry's importance row as llama-quantize computes it from the f32 sums: sums / count."""
    return s.astype(np.float32) / np.float32(n)


def write_gguf_imatrix(path: Path, sums: dict[str, tuple[np.ndarray, int]]) -> Path:
    """The layout current llama-imatrix writes: <name>.in_sum2 and <name>.counts per entry, f32."""
    w = gguf.GGUFWriter(str(path), arch="")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["random-tokens.txt"])
    w.add_uint32("imatrix.chunk_count", 4)
    w.add_uint32("imatrix.chunk_size", 32)
    for name, (s, n) in sorted(sums.items()):
        w.add_tensor(name + ".in_sum2", s.astype(np.float32).reshape(1, -1))
        w.add_tensor(name + ".counts", np.array([[n]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_legacy_imatrix(path: Path, sums: dict[str, tuple[np.ndarray, int]]) -> Path:
    """The legacy .dat: per entry its name, call count and sums times calls / tokens; then the
    chunk count and dataset."""
    out = [struct.pack("<i", len(sums))]
    for name, (s, n) in sorted(sums.items()):
        calls = 4
        out += [struct.pack("<i", len(name)), name.encode(), struct.pack("<ii", calls, s.size),
                (weights(s, n) * np.float32(calls)).astype("<f4").tobytes()]
    out += [struct.pack("<i", 4), struct.pack("<i", len(b"random-tokens.txt")), b"random-tokens.txt"]
    path.write_bytes(b"".join(out))
    return path


def llama_quantize_weighted(src: Path, dst: Path, file_type: str, sums: dict[str, tuple[np.ndarray, int]]) -> Path:
    """llama_model_quantize given the importance rows llama-quantize derives (sums / count)."""
    import llama_cpp

    rows = {name: weights(s, n) for name, (s, n) in sums.items()}
    entries = (llama_cpp.llama_model_imatrix_data * (len(rows) + 1))(*(
        llama_cpp.llama_model_imatrix_data(name.encode(), v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), v.size)
        for name, v in rows.items()))
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.imatrix = FILE_TYPES[file_type].number, 2, entries
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) == 0
    return dst


@pytest.mark.parametrize("file_type, layout", [("q4_k_m", "gguf"), ("q2_k_s", "gguf"), ("q4_0", "legacy"), ("iq4_xs", "legacy")])
def test_imatrix_weighs_the_rounding_as_llama_quantize(tiny: tuple[Path, Path], activations: dict, tmp_path: Path,
                                                       file_type: str, layout: str) -> None:
    write = write_gguf_imatrix if layout == "gguf" else write_legacy_imatrix
    im = write(tmp_path / f"imatrix.{'gguf' if layout == 'gguf' else 'dat'}", activations)
    want = llama_quantize_weighted(tiny[1], tmp_path / "ref.gguf", file_type, activations)
    got = one_pass(tiny[0], tmp_path / "pyconv.gguf", file_type, imatrix=str(im))
    assert_same_file(got, want)
    kv = {f.name: f.contents() for f in gguf.GGUFReader(got).fields.values() if f.name.startswith("quantize.imatrix.")}
    assert kv == {"quantize.imatrix.file": str(im), "quantize.imatrix.dataset": "random-tokens.txt",
                  "quantize.imatrix.entries_count": len(activations), "quantize.imatrix.chunks_count": 4}


def test_imatrix_that_does_not_fit_names_the_tensor(tiny: tuple[Path, Path], activations: dict, tmp_path: Path) -> None:
    missing = {k: v for k, v in activations.items() if k != "blk.3.ffn_up.weight"}
    r = run_cli("quantize", tiny[1], "-o", tmp_path / "out.gguf", "--outtype", "q4_k_m",
                "--imatrix", write_gguf_imatrix(tmp_path / "missing.gguf", missing))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "blk.3.ffn_up.weight" in r.stderr and "no entry" in r.stderr
    short = {**activations, "blk.0.attn_q.weight": (activations["blk.0.attn_q.weight"][0][:128], 10)}
    r = run_cli("quantize", tiny[1], "-o", tmp_path / "out.gguf", "--outtype", "q4_k_m",
                "--imatrix", write_legacy_imatrix(tmp_path / "short.dat", short))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "blk.0.attn_q.weight" in r.stderr and "128 values" in r.stderr
    (tmp_path / "junk.dat").write_bytes(b"\x00\x00")
    r = run_cli("quantize", tiny[1], "-o", tmp_path / "out.gguf", "--outtype", "q4_k_m", "--imatrix", tmp_path / "junk.dat")
    assert r.returncode != 0 and "not an imatrix" in r.stderr and "junk.dat" in r.stderr
    assert not (tmp_path / "out.gguf").exists()


@pytest.fixture(scope="module")
def tiny_mixtral(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An 8-expert mixtral (the rules that look at experts) with rows of 256: HF folder, F32 GGUF."""
    from transformers import MixtralConfig, MixtralForCausalLM

    folder = tmp_path_factory.mktemp("mix-mixtral")
    cfg = MixtralConfig(vocab_size=train_sentencepiece(folder, gemma=False), hidden_size=256, intermediate_size=256,
                        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, num_local_experts=8,
                        num_experts_per_tok=2, max_position_embeddings=64, tie_word_embeddings=False)
    save_model(MixtralForCausalLM, cfg, folder, seed=17)
    f32 = folder.parent / "mix-mixtral-f32.gguf"
    pyconv.convert(folder, f32, outtype="f32", progress=False, fingerprint=False)
    return folder, f32


def test_experts_get_their_own_imatrix_rows(tiny_mixtral: tuple[Path, Path], tmp_path: Path) -> None:
    """Each expert of a stacked tensor is weighed by its own row, and the 8-expert rules apply."""
    folder, f32 = tiny_mixtral
    rng = np.random.default_rng(5)
    sums = {}
    for t in gguf.GGUFReader(f32).tensors:
        if len(t.shape) >= 2 and t.name.endswith(".weight") and "norm" not in t.name and "gate_inp" not in t.name:
            n_mat = int(np.prod([int(d) for d in t.shape[2:]]))
            sums[t.name] = (rng.uniform(0.05, 3.0, (n_mat, int(t.shape[0]))), rng.integers(1, 9, n_mat))
    im = tmp_path / "experts.gguf"
    w = gguf.GGUFWriter(str(im), arch="")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["random"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 8)
    for name, (s, n) in sums.items():
        w.add_tensor(name + ".in_sum2", s.astype(np.float32))
        w.add_tensor(name + ".counts", n.astype(np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rows = {name: (s.astype(np.float32) / n.astype(np.float32)[:, None]).reshape(-1) for name, (s, n) in sums.items()}
    per_matrix = {name: (v, 1) for name, v in rows.items()}
    want = llama_quantize_weighted(f32, tmp_path / "ref.gguf", "q4_k_m", per_matrix)
    got = one_pass(folder, tmp_path / "pyconv.gguf", "q4_k_m", imatrix=str(im))
    assert_same_file(got, want)
    types = {n: t for n, (t, _) in tensors(got).items()}
    assert types["blk.0.attn_v.weight"] == types["blk.0.attn_k.weight"] == "Q8_0"
    assert types["blk.1.attn_output.weight"] == "Q5_K"


# --- llama.cpp's own tools (make llama-tools) ------------------------------------------------------

LLAMA_TOOLS = REPO / "build" / "llama-tools" / "cmake" / "bin"


def llama_tool(name: str, *args: str | Path) -> None:
    exe = LLAMA_TOOLS / name
    assert exe.exists(), f"{exe} is missing: `make llama-tools` builds it (make test does)"
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def smollm2_imatrix(smollm2_f32: Path) -> dict[str, Path]:
    """Importance matrices llama-imatrix computes for SmolLM2 on a short English text, in both of
    its output formats."""
    text = smollm2_f32.with_name("calibration.txt")
    text.write_text("\n".join(CORPUS * 4), encoding="utf-8")
    out = {}
    for fmt in ("gguf", "dat"):
        out[fmt] = smollm2_f32.with_name(f"imatrix.{fmt}")
        llama_tool("llama-imatrix", "-m", smollm2_f32, "-f", text, "-o", out[fmt], "-c", "128", "--chunks", "2",
                   "-t", "2", "--output-format", fmt, "--no-ppl")
    return out


@pytest.mark.parametrize("fmt", ["gguf", "dat"])
def test_smollm2_with_llama_imatrix_equals_llama_quantize(smollm2_hf: Path, smollm2_f32: Path,
                                                          smollm2_imatrix: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    im = smollm2_imatrix[fmt]
    want = tmp_path / "ref.gguf"
    llama_tool("llama-quantize", "--imatrix", im, smollm2_f32, want, "Q4_K_M", "2")
    got = one_pass(smollm2_hf, tmp_path / "pyconv.gguf", "q4_k_m", imatrix=str(im))
    assert_same_file(got, want)

    def recorded(path: Path) -> dict[str, Any]:
        return {f.name: f.contents() for f in gguf.GGUFReader(path).fields.values() if f.name.startswith("quantize.")}
    assert recorded(got) == recorded(want) and recorded(want)["quantize.imatrix.file"] == str(im)
