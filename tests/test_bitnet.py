"""BitNet b1.58 to GGUF: tiny models made by transformers' BitNet, converted to I2_S, TQ1_0, TQ2_0 and
floats. llama.cpp runs the mainline files with transformers' logits; I2_S bytes are decoded by the
spec's layout in numpy and compared with a numpy/torch ternarization of the source; TQ bytes with
gguf-py's quantizer; transformers' packed checkpoints with its own ``unpack_weights``."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pyconv
from pyconv.errors import ConversionError
from pyconv.sources.gguf import read_gguf
from pyconv.validate import validate

from .bitnet_fixtures import (
    BITNET_SHAPE,
    PROJECTION_SUFFIXES,
    absmean_reference,
    build_bitnet,
    decode_i2s,
    to_1bitllm,
    to_packed,
    transformers_bitnet,
)
from .conftest import run_cli
from .test_archs_gguf import hf_logits, llama_logits, token_ids
from .test_validate_gguf import rewrite, status

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")
# llama.cpp's TQ matmuls quantize activations to Q8_K (8 bits per 256 values) and keep the ternary
# magnitude as f16; on these models that moves logits (|logit| up to ~4) by about 0.1
F32_TOL = 1e-4
TQ_TOL = 0.25
N_LAYERS = BITNET_SHAPE["num_hidden_layers"]


class Shop:
    """Checkpoints and their GGUF files, each built once per module."""

    def __init__(self, root: Path, smollm2: Path) -> None:
        self.root, self.smollm2 = root, smollm2
        self.made: dict[str, Path] = {}

    def model(self, name: str) -> Path:
        if name not in self.made:
            out = self.root / name
            if name == "parity":  # ternary weights, SiLU: the function mainline llama.cpp's 'bitnet' graph computes
                build_bitnet(out, self.smollm2, hidden_act="silu", ternary=True, dtype=torch.float32, seed=1)
            elif name == "float":  # BitNet as trained and shipped as bf16: float weights, ReLU²
                build_bitnet(out, self.smollm2, hidden_act="relu2", ternary=False, dtype=torch.bfloat16, seed=2)
            elif name == "onebit":
                to_1bitllm(self.model("float"), out)
            self.made[name] = out
        return self.made[name]

    def gguf(self, name: str, outtype: str, **options: object) -> Path:
        key = f"{name}-{outtype}" + "".join(f"-{k}" for k in options)
        if key not in self.made:
            self.made[key] = self.root / f"{key}.gguf"
            pyconv.convert(self.model(name), self.made[key], outtype=outtype, progress=False, **options)
        return self.made[key]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Shop:
    return Shop(tmp_path_factory.mktemp("bitnet"), smollm2_hf)


def tensor_bytes(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """(type, shape, data) of every tensor, read with pyconv's GGUF parser (gguf-py has no I2_S)."""
    g = read_gguf(path)
    out = {}
    with path.open("rb") as f:
        for name, t in g.tensors.items():
            seg = t.segments[0]
            f.seek(seg.offset)
            out[name] = (t.dtype, t.shape, f.read(seg.nbytes))
    return out


def source_weights(folder: Path) -> dict[str, np.ndarray]:
    return {k: v.float().numpy() for k, v in load_file(folder / "model.safetensors").items()}


def gguf_name(hf: str) -> str:
    layer = hf.split(".")[2]
    kind = PROJECTIONS[PROJECTION_SUFFIXES.index(next(s for s in PROJECTION_SUFFIXES if hf.endswith(s)))]
    return f"blk.{layer}.{kind}.weight"


@pytest.mark.parametrize("outtype", ["f32", "tq2_0", "tq1_0"])
def test_llama_cpp_logits_match_transformers_bitnet(shop: Shop, outtype: str) -> None:
    folder = shop.model("parity")
    ids = token_ids(folder)
    want = hf_logits(folder, ids)
    assert np.abs(want).max() > 2.0
    got = llama_logits(shop.gguf("parity", outtype), ids)
    diff = float(np.abs(got - want).max())
    assert diff < (F32_TOL if outtype == "f32" else TQ_TOL), diff
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9
    if outtype == "tq2_0":
        # the same weights under ReLU² (what BitNet.cpp's graph applies) are far off: the activation
        # warning is about a real difference, and the tolerance above would catch it
        relu2 = hf_logits(folder, ids, hidden_act="relu2")
        assert float(np.abs(got - relu2).max()) > 4 * TQ_TOL


def test_types_follow_bitnet_rules(shop: Shop) -> None:
    """Norms (sub-norms too) and 1-d tensors f32, the embedding f16, the 7 projections ternary, and
    the architecture each runtime knows the graph by."""
    for outtype, arch in (("i2_s", "bitnet-b1.58"), ("tq2_0", "bitnet"), ("tq1_0", "bitnet"), ("f16", "bitnet")):
        path = shop.gguf("float", outtype)
        types = {n: d for n, (d, _s, _b) in tensor_bytes(path).items()}
        want = {"token_embd.weight": "f16", "output_norm.weight": "f32"}
        for i in range(N_LAYERS):
            want |= {f"blk.{i}.{k}.weight": "f32" for k in NORMS}
            want |= {f"blk.{i}.{k}.weight": outtype for k in PROJECTIONS}
        assert types == want, outtype
        kv = read_gguf(path).kv
        assert kv["general.architecture"].value == arch
        assert kv["general.file_type"].value == {"i2_s": 40, "tq2_0": 37, "tq1_0": 36, "f16": 1}[outtype]


def test_i2s_decodes_to_the_ternarized_source(shop: Shop) -> None:
    """bf16 float weights: every projection decodes (by the spec's layout, in numpy) to absmean
    ternarization of the source rounded to bf16, with that magnitude as the tensor's scale; the
    embedding is the bf16 source in f16; the engine's decisions land in the .meta.json."""
    src = source_weights(shop.model("float"))
    path = shop.gguf("float", "i2_s")
    got = tensor_bytes(path)
    for hf, w in src.items():
        if not hf.endswith(PROJECTION_SUFFIXES):
            continue
        _dtype, shape, raw = got[gguf_name(hf)]
        values, scale = decode_i2s(raw, shape)
        want = absmean_reference(w, torch.bfloat16)
        assert np.array_equal(values, want), hf
        assert scale == np.abs(want).max() and len(np.unique(np.abs(want))) == 2
    embd = np.frombuffer(got["token_embd.weight"][2], np.float16).reshape(src["model.embed_tokens.weight"].shape)
    assert np.array_equal(embd, src["model.embed_tokens.weight"].astype(np.float16))
    meta = json.loads(path.with_name(f"{path.stem}.meta.json").read_text())
    assert {r["decision"] for r in meta["ternary"].values()} == {"absmean-ternarized"} and len(meta["ternary"]) == 7 * N_LAYERS


def test_tq_bytes_equal_gguf_py_quantizing_the_ternarized_source(shop: Shop) -> None:
    src = source_weights(shop.model("float"))
    for outtype in ("tq2_0", "tq1_0"):
        got = tensor_bytes(shop.gguf("float", outtype))
        qtype = gguf.GGMLQuantizationType[outtype.upper()]
        for hf, w in src.items():
            if hf.endswith(PROJECTION_SUFFIXES):
                want = gguf.quants.quantize(absmean_reference(w, torch.bfloat16), qtype).tobytes()
                assert got[gguf_name(hf)][2] == want, (outtype, hf)


def test_already_ternary_weights_are_packed_as_they_are(shop: Shop) -> None:
    src = source_weights(shop.model("parity"))
    path = shop.gguf("parity", "i2_s")
    got = tensor_bytes(path)
    for hf, w in src.items():
        if hf.endswith(PROJECTION_SUFFIXES):
            values, scale = decode_i2s(got[gguf_name(hf)][2], got[gguf_name(hf)][1])
            assert np.array_equal(values, w) and scale == np.abs(w).max(), hf
    meta = json.loads(path.with_name(f"{path.stem}.meta.json").read_text())
    assert {r["decision"] for r in meta["ternary"].values()} == {"already ternary: packed as it is"}


def test_1bitllm_naming_gives_the_same_tensors(shop: Shop) -> None:
    for outtype in ("i2_s", "tq2_0"):
        assert tensor_bytes(shop.gguf("onebit", outtype)) == tensor_bytes(shop.gguf("float", outtype))


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_packed_checkpoints_unpack_as_transformers_computes_them(shop: Shop, linear_class: str) -> None:
    """Four 2-bit codes of four output rows in a byte, scaled by weight_scale (BitLinear divides by
    it, AutoBitLinear multiplies): f32 GGUF projections equal transformers' unpack_weights with that
    scale, read in chunks far smaller than a tensor; I2_S keeps the codes with the same magnitude."""
    unpack_weights = transformers_bitnet().unpack_weights
    folder = shop.root / f"packed-{linear_class}"
    packed = to_packed(shop.model("parity"), folder, linear_class)
    scales = {k: v.float() for k, v in load_file(folder / "model.safetensors").items() if k.endswith("_scale")}
    f32, i2s = shop.root / f"packed-{linear_class}-f32.gguf", shop.root / f"packed-{linear_class}-i2_s.gguf"
    pyconv.convert(folder, f32, outtype="f32", progress=False, chunk_bytes=4096)
    pyconv.convert(folder, i2s, outtype="i2_s", progress=False)
    got, got_i2s = tensor_bytes(f32), tensor_bytes(i2s)
    for hf, p in packed.items():
        codes = unpack_weights.__wrapped__(p, torch.float32)  # transformers' own code, without torch.compile
        scale = scales[hf + "_scale"]
        want = (codes / scale if linear_class == "bitlinear" else codes * scale).numpy()
        name = gguf_name(hf)
        assert np.array_equal(np.frombuffer(got[name][2], np.float32).reshape(want.shape), want), hf
        values, _ = decode_i2s(got_i2s[name][2], got_i2s[name][1])
        assert np.array_equal(values, want), hf
    assert set(got) == set(tensor_bytes(shop.gguf("parity", "f32")))


def test_quantize_requantizes_a_clean_gguf_only(shop: Shop, tmp_path: Path) -> None:
    """F16 GGUF → I2_S gives the file convert writes from the checkpoint (the f16 weights are
    already ternary), keys moved to BitNet.cpp's architecture name; a quantized source is refused."""
    direct = shop.gguf("float", "i2_s")
    out = tmp_path / "from-f16.gguf"
    r = run_cli("quantize", shop.gguf("float", "f16"), "-o", out, "--outtype", "i2_s")
    assert r.returncode == 0, r.stderr
    assert "14 already ternary" in r.stderr
    assert tensor_bytes(out) == tensor_bytes(direct)
    want_kv, got_kv = read_gguf(direct).kv, read_gguf(out).kv
    assert set(got_kv) == set(want_kv) and all(np.array_equal(got_kv[k].value, want_kv[k].value) for k in want_kv)
    r = run_cli("quantize", shop.gguf("float", "tq2_0"), "-o", tmp_path / "again.gguf", "--outtype", "i2_s")
    assert r.returncode == 1 and "holds tq2_0 tensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_i2s_files_read_back_through_the_spec_layout(shop: Shop, tmp_path: Path) -> None:
    """An I2_S file as a source (its codes decoded by the I2_S kernel with the scale from its tail)
    gives the TQ2_0 file made from the checkpoint, byte for byte, which llama.cpp runs above."""
    out = tmp_path / "from-i2s.gguf"
    pyconv.convert(shop.gguf("parity", "i2_s"), out, outtype="tq2_0", progress=False)
    assert tensor_bytes(out) == tensor_bytes(shop.gguf("parity", "tq2_0"))
    assert read_gguf(out).kv["general.architecture"].value == "bitnet"


def test_other_architectures_need_ternarize(tmp_path: Path, smollm2_hf: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from .archs_fixtures import copy_smollm2_tokenizer

    src = tmp_path / "llama"
    torch.manual_seed(3)
    shape = {k: v for k, v in BITNET_SHAPE.items() if k != "initializer_range"}
    LlamaForCausalLM(LlamaConfig(**shape)).save_pretrained(src)
    copy_smollm2_tokenizer(smollm2_hf, src)
    with pytest.raises(ConversionError, match="pass --ternarize absmean"):
        pyconv.convert(src, tmp_path / "no.gguf", outtype="tq2_0", progress=False)
    out = tmp_path / "llama-tq2_0.gguf"
    pyconv.convert(src, out, outtype="tq2_0", ternarize="absmean", progress=False)
    types = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(out).tensors}
    assert {n for n, d in types.items() if d == "tq2_0"} == {f"blk.{i}.{k}.weight" for i in range(N_LAYERS) for k in PROJECTIONS}
    assert types["token_embd.weight"] == "f16" and all(d == "f32" for n, d in types.items() if n.endswith("norm.weight"))
    report = validate(out, strict=True, probe=False)
    assert report.ok and status(report, "ternary") == "pass"


def test_keep_float_and_dry_run_say_why(shop: Shop, tmp_path: Path) -> None:
    """--keep-float matches GGUF or HF names; --dry-run gives every tensor's type and reason, and
    the one-line warning that a ReLU² model is written for a SiLU graph."""
    out = tmp_path / "kept.gguf"
    r = run_cli("convert", shop.model("float"), "-o", out, "--outtype", "tq2_0", "--dry-run",
                "--keep-float", r"^blk\.1\.ffn_down", "--keep-float", r"layers\.0\.self_attn\.o_proj")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(("blk.", "token_embd", "output"))}
    assert " f16 " in rows["blk.1.ffn_down.weight"] and "kept float by --keep-float" in rows["blk.1.ffn_down.weight"]
    assert " f16 " in rows["blk.0.attn_output.weight"] and " tq2_0 " in rows["blk.0.ffn_down.weight"]
    assert "absmean" in rows["blk.0.attn_q.weight"] and "1-d or norm: f32" in rows["blk.0.ffn_sub_norm.weight"]
    assert "embedding in a ternary file: f16" in rows["token_embd.weight"]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("pyconv: warning:")]
    assert len(warnings) == 1 and "relu2" in warnings[0] and "'bitnet'" in warnings[0]
    assert not out.exists()


def test_validate_strict(shop: Shop, tmp_path: Path) -> None:
    """Both BitNet files pass --strict, with llama.cpp's and BitNet-rs' keys; a missing key, an
    invalid code and a tensor that is not ternary each fail."""
    i2s = validate(shop.gguf("float", "i2_s"), strict=True, probe=False)
    assert i2s.ok and status(i2s, "ternary") == "pass" and status(i2s, "runtime") == "skip"
    tq = shop.gguf("parity", "tq2_0")
    report = validate(tq, strict=True, reference=shop.model("parity"))
    assert all(status(report, c) == "pass" for c in ("container", "metadata", "norm types", "ternary"))
    # the greedy probe ran in llama.cpp (a random model's words are no language, so its verdict is not
    # asked for), and its logits on the prompt are transformers' within the TQ tolerance
    checks = {c.name: c for c in report.checks}
    assert checks["runtime"].data["continuation"] and checks["reference"].data["max_abs_diff"] < TQ_TOL

    missing = rewrite(tq, tmp_path / "missing.gguf", drop_keys=("bitnet.num_heads",))
    assert status(validate(missing, strict=True, probe=False), "metadata") == "fail"
    assert status(validate(missing, probe=False), "metadata") == "warn"

    rng = np.random.default_rng(0)

    def not_ternary(name: str, data: np.ndarray) -> np.ndarray:
        if name != "blk.0.attn_q.weight":
            return data
        w = rng.standard_normal((256, 256)).astype(np.float32)
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType.TQ2_0)

    mixed = rewrite(tq, tmp_path / "mixed.gguf", edit=not_ternary)
    assert status(validate(mixed, probe=False), "ternary") == "fail"

    broken = tmp_path / "code3.gguf"
    broken.write_bytes(shop.gguf("float", "i2_s").read_bytes())
    t = read_gguf(broken).tensors["blk.0.attn_q.weight"]
    with broken.open("r+b") as f:
        f.seek(t.segments[0].offset)
        f.write(b"\xff")
    assert status(validate(broken, probe=False), "ternary") == "fail"


def test_bit_fields_are_read_from_bytes_only(tmp_path: Path) -> None:
    """The engine's bit-field decode takes u8 sources and fields inside a byte; anything else is a
    plan error, never a silently wrong tensor."""
    from pyconv import engine
    from pyconv.plan import BitField, OutFile, OutTensor, Part, Plan, View

    from .test_engine import write_source

    src = write_source(tmp_path, {"b": np.zeros((4, 8), np.uint8), "f": np.zeros((4, 8), np.float32)})
    cases = [("f", BitField(0), "come from u8 bytes"), ("b", BitField(7), "come from u8 bytes"),
             ("b", BitField(0, bits=9), "come from u8 bytes")]
    for source, field, message in cases:
        t = OutTensor("t", (4, 8), "f32", [Part(View.of(src[source]), (0, 0), field)])
        with pytest.raises(ConversionError, match=message):
            engine.layout(Plan([OutFile("o.safetensors", "safetensors")], [t]))


def test_absmean_is_the_same_with_and_without_simd(tmp_path: Path) -> None:
    """The engine's absmean kernels (statistics and ternarization) give the scalar reference's bytes
    and decisions: rows of odd lengths leave SIMD tails, and zeros of both signs, values at I2_S's
    zero threshold, Inf and NaN take their special paths."""
    from pyconv import _core, engine
    from pyconv.plan import Op, OutFile, OutTensor, Plan, View

    from .test_engine import write_source

    rng = np.random.default_rng(11)
    special = np.float32([0.0, -0.0, 1e-6, np.nextafter(np.float32(1e-6), np.float32(0)), 1e-7, -1e-7, np.inf, np.nan, 0.5])
    arrays = {}
    for i, cols in enumerate((67, 256, 1000, 4103)):
        w = (rng.standard_normal((5, cols)) * 0.02).astype(np.float32)
        if i % 2:
            w.flat[rng.choice(w.size, 40)] = rng.choice(special[:6], 40)
        arrays[f"w{i}"] = w
    arrays["inf"] = np.where(rng.random((3, 256)) < 0.01, np.float32(np.inf), np.float32(0.3)).astype(np.float32)
    arrays["nan"] = np.where(rng.random((3, 256)) < 0.01, np.float32(np.nan), rng.standard_normal((3, 256))).astype(np.float32)
    src = write_source(tmp_path, arrays)

    def run(simd: bool) -> tuple[bytes, list[tuple[str, bool, bool, bytes]]]:
        tensors, at = [], 0
        for name, t in src.items():
            for dtype, round_to in (("f32", "f32"), ("f32", "bf16"), ("i2_s", "f16")):
                if dtype == "i2_s" and t.shape[1] % 128:
                    continue
                o = OutTensor.from_view(f"{name}.{dtype}.{round_to}", View.of(t), dtype)
                o.ops = [Op("ternarize_absmean", keep_if_ternary=name == "inf", round_to=round_to)]
                o.offset, at = at, at + o.nbytes
                tensors.append(o)
        out = tmp_path / f"simd-{simd}.raw"
        _core.set_simd_enabled(simd)
        try:
            reports = engine.execute(Plan([OutFile(out.name, "raw", size=at)], tensors), [out], threads=1, chunk_bytes=4096)
        finally:
            _core.set_simd_enabled(True)
        return out.read_bytes(), [(r["name"], r["ternarized"], r["already_ternary"],
                                   np.float64([r["scale"], r["mean_abs"]]).tobytes()) for r in reports]

    scalar, simd = run(False), run(True)
    assert _core.simd_level() == "avx2"
    assert simd[1] == scalar[1]
    assert simd[0] == scalar[0]
