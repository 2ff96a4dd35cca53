"""NeoBERT trainer checkpoints → GGUF for llama.cpp's ``neo-bert`` encoder, run in llama.cpp.

llama.cpp's graph (src/models/neo-bert.cpp, through ``build_qkv``) takes the fused ``attn_qkv`` output as
contiguous [Q; K; V] thirds, while NeoBERT groups its rows per head ([q_h; k_h; v_h] for each head h), and
llama.cpp's own converter copies the rows as they are. pyconv regroups them into thirds as a strided view,
fuses w1‖w2 into ``ffn_up`` gate first (or keeps xformers' packed w12), writes the trainer's rounded SwiGLU
width and drops the masked-LM decoder. The tests run pyconv's files in llama.cpp and compare its token
embeddings with the training-side forward pass (``tests/reference/neobert.py``) and with the HF export loaded
through ``trust_remote_code``; llama.cpp must tokenize like the exported tokenizer. A reproducer keeps what
llama.cpp's converter's layout computes: gguf-py files written without pyconv, rows as stored and regrouped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import pyconv
from pyconv import registry
from pyconv.validate import validate

from .archs_fixtures import train_wordpiece
from .conftest import run_cli
from .neobert_fixtures import MODEL_VOCAB, Run, shape, weights, write_step
from .reference.hf_folder import job, run_probe
from .reference.neobert import NeoBERTShape, hidden_states, trainer_state_dict
from .test_archs_gguf import llama_embeddings, llama_tokens, max_diff
from .test_export_neobert import train_with_deepspeed

# I = 200: the trainer's I' is 136, llama.cpp's converter's int(2I/3) is 133, which would not load
SHAPE = shape()
# the run's WordPiece tokenizer has fewer tokens than the model's MODEL_VOCAB embeddings
TOKENIZER_VOCAB = 100
TEXTS = ["The capital of France is Paris.", "She sells sea shells, 42 of them!", "paris is the [MASK] of france ."]
RUNS = {
    # chandar-lab: xformers' packed w12, torch.compile prefix, decoder tied (stored twice)
    "packed": Run("packed", SHAPE, 1, packed=True, prefix="_orig_mod."),
    # pszemraj: w1/w2/w3, DDP prefix; an untied legacy decoder with a bias, dropped with the rest of the head
    "unpacked": Run("unpacked", shape(decoder_bias=True), 2, tied=False, legacy_decoder=True, prefix="module."),
}
# max |Δ| against the training forward (hidden states reach ~4.5): f32 runs in float32 up to summation order;
# f16/bf16 weights round to 11/8 bits and ggml rounds activations to them for the matmuls; q8_0 quantizes both
TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "bf16": 6e-2, "q8_0": 0.15}
# a layout mistake moves the embeddings by more than this
BROKEN = 1.0
CASES = [("packed", "f32"), ("packed", "f16"), ("packed", "bf16"), ("packed", "q8_0"), ("unpacked", "f32"), ("zero", "f32")]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uncased BERT WordPiece tokenizer, as NeoBERT trains with (trained once: training is not deterministic)."""
    folder = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece(folder, vocab_size=TOKENIZER_VOCAB)
    return folder


def wordpiece_step(root: Path, run: Run, tokenizer: Path, **options: Any) -> Path:
    """A trainer checkpoint with ``tokenizer`` as its tokenizer/."""
    step = write_step(root, run, tokenizer=False, **options)
    shutil.copytree(tokenizer, step / "tokenizer")
    return step


class Files:
    """The trainer checkpoints, pyconv's GGUF files of them, and the HF export's hidden states."""

    def __init__(self, root: Path, tokenizer: Path) -> None:
        self.root = root
        self.steps = {name: wordpiece_step(root, run, tokenizer) for name, run in RUNS.items()}
        self.sds = {name: weights(run) for name, run in RUNS.items()}
        self.shapes = {name: run.shape for name, run in RUNS.items()}
        trained = train_with_deepspeed(root / "deepspeed")
        self.steps["zero"] = wordpiece_step(root, Run("zero", SHAPE, 5), tokenizer, weights_file=False)
        # Accelerate's save_state puts DeepSpeed's rank files in <step>/pytorch_model/
        shutil.copytree(trained / "ckpt" / "global_step3", self.steps["zero"] / "pytorch_model")
        self.sds["zero"] = load_file(trained / "master.safetensors")
        self.shapes["zero"] = SHAPE
        self.ggufs: dict[tuple[str, str], Path] = {}
        for name, outtype in CASES:
            out = root / f"{name}-{outtype}.gguf"
            if (name, outtype) == ("packed", "q8_0"):
                # the command as a user types it
                proc = run_cli("convert", self.steps[name], "-o", out, "--outtype", outtype, "-q")
                assert proc.returncode == 0, proc.stderr
            else:
                pyconv.convert(self.steps[name], out, outtype=outtype, progress=False)
            self.ggufs[name, outtype] = out
        self.hf = root / "hf-packed"
        pyconv.convert(self.steps["packed"], self.hf, to="hf", progress=False)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.hf, trust_remote_code=True)
        self.ids = [self.tokenizer(text).input_ids for text in TEXTS]
        calls = [{"name": str(i), "kwargs": {"input_ids": torch.tensor([ids])}} for i, ids in enumerate(self.ids)]
        self.results = run_probe([{"name": "base", "kind": "load", "auto": "AutoModel", "dir": str(self.hf),
                                   "calls": calls}], root)

    def reference(self, name: str, ids: list[int]) -> np.ndarray:
        return hidden_states(self.sds[name], self.shapes[name], torch.tensor([ids]))[0].numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, wordpiece: Path) -> Files:
    return Files(tmp_path_factory.mktemp("neobert-gguf"), wordpiece)


def per_token(path: Path, text: str) -> np.ndarray:
    """llama.cpp's embedding of every token of ``text``, as its own tokenizer splits it."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE

    return llama_embeddings(path, text, LLAMA_POOLING_TYPE_NONE)


# --- pyconv's files in llama.cpp ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "outtype"), CASES)
def test_llama_cpp_embeddings_equal_the_training_forward(files: Files, name: str, outtype: str) -> None:
    path = files.ggufs[name, outtype]
    for text, ids in zip(TEXTS[:2], files.ids):
        want = files.reference(name, ids)
        assert np.abs(want).max() > 1.0
        assert max_diff(per_token(path, text), want) < TOLERANCE[outtype], (text, outtype)


def test_llama_cpp_embeddings_equal_the_hf_export(files: Files) -> None:
    outputs = job(files.results, "base")["outputs"]
    for i, ids in enumerate(files.ids):  # the third holds [MASK], which embed() would not parse as one token
        got = llama_token_embeddings(files.ggufs["packed", "f32"], ids)
        assert max_diff(got, outputs[str(i)]["last_hidden_state"][0].numpy()) < TOLERANCE["f32"], TEXTS[i]


def test_llama_cpp_pools_as_the_file_says(files: Files) -> None:
    """Mean over every token, [CLS] and [SEP] included: the HF export README's sentence embedding."""
    from llama_cpp import LLAMA_POOLING_TYPE_UNSPECIFIED

    text, ids = TEXTS[0], files.ids[0]
    pooled = llama_embeddings(files.ggufs["packed", "f32"], text, LLAMA_POOLING_TYPE_UNSPECIFIED)
    assert max_diff(pooled, files.reference("packed", ids).mean(0)) < TOLERANCE["f32"]


def test_llama_cpp_tokenizes_like_the_exported_tokenizer(files: Files) -> None:
    path = files.ggufs["packed", "f32"]
    for text, ids in zip(TEXTS, files.ids):
        assert llama_tokens(path, text, add_bos=True) == ids, text
        pieces = files.tokenizer.convert_ids_to_tokens(ids)
        assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and any(p.startswith("##") for p in pieces), pieces
    assert files.tokenizer.mask_token_id in files.ids[2]


def test_vocabulary_is_padded_as_the_hf_export_pads_it(files: Files) -> None:
    fields = gguf.GGUFReader(files.ggufs["packed", "f32"]).fields
    tokens = fields[gguf.Keys.Tokenizer.LIST].contents()
    types = fields[gguf.Keys.Tokenizer.TOKEN_TYPE].contents()
    assert len(tokens) == len(types) == MODEL_VOCAB == len(files.tokenizer)
    exported = files.tokenizer.convert_ids_to_tokens(list(range(MODEL_VOCAB)))
    specials = set(files.tokenizer.all_special_tokens)
    have = len(files.tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False))
    assert have < MODEL_VOCAB
    for i, (ours, kind, theirs) in enumerate(zip(tokens, types, exported)):
        if i >= have:  # the placeholders the trainer adds, as control tokens llama.cpp never splits text into
            assert (ours, kind) == (theirs, gguf.TokenType.CONTROL) and theirs.startswith("<|neobert_extra_token_"), i
        elif theirs in specials:
            assert (ours, kind) == (theirs, gguf.TokenType.CONTROL), i
        else:  # llama.cpp's WordPiece marks word starts with ▁ and continuations without ##
            assert ours == (theirs[2:] if theirs.startswith("##") else "\u2581" + theirs) and kind == gguf.TokenType.NORMAL, i
    for key, token in ((gguf.Keys.Tokenizer.BOS_ID, "[CLS]"), (gguf.Keys.Tokenizer.SEP_ID, "[SEP]"),
                       (gguf.Keys.Tokenizer.PAD_ID, "[PAD]"), (gguf.Keys.Tokenizer.UNK_ID, "[UNK]"),
                       (gguf.Keys.Tokenizer.MASK_ID, "[MASK]")):
        assert fields[key].contents() == files.tokenizer.convert_tokens_to_ids(token), key


def test_metadata_and_tensors(files: Files) -> None:
    reader = gguf.GGUFReader(files.ggufs["unpacked", "f32"])
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.NEO_BERT]
    kv = {k: f.contents() for k, f in reader.fields.items() if k.startswith(arch)}
    s = RUNS["unpacked"].shape
    assert s.ffn_width == 136 != int(2 * s.intermediate / 3)
    assert reader.fields[gguf.Keys.General.ARCHITECTURE].contents() == arch
    assert kv == {
        gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch): s.max_len,
        gguf.Keys.LLM.EMBEDDING_LENGTH.format(arch=arch): s.hidden,
        gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch): s.layers,
        gguf.Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch): s.ffn_width,
        gguf.Keys.Attention.HEAD_COUNT.format(arch=arch): s.heads,
        gguf.Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch): pytest.approx(s.eps),
        gguf.Keys.Attention.CAUSAL.format(arch=arch): False,
        gguf.Keys.Rope.FREQ_BASE.format(arch=arch): 10000.0,
        gguf.Keys.LLM.POOLING_TYPE.format(arch=arch): gguf.PoolingType.MEAN,
    }
    # no decoder, no decoder bias: llama.cpp's neo-bert gives embeddings
    layer = {"attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"}
    want = {"token_embd.weight", "enc.output_norm.weight"} | {f"blk.{i}.{t}.weight" for i in range(s.layers) for t in layer}
    tensors = {t.name: t.data for t in reader.tensors}
    assert set(tensors) == want
    sd, dh = files.sds["unpacked"], s.hidden // s.heads
    for i in range(s.layers):
        p = f"model.transformer_encoder.{i}"
        thirds = sd[f"{p}.qkv.weight"].view(s.heads, 3, dh, s.hidden).transpose(0, 1).reshape(3 * s.hidden, s.hidden)
        assert np.array_equal(tensors[f"blk.{i}.attn_qkv.weight"], thirds.numpy())
        gate_first = torch.cat((sd[f"{p}.ffn.w1.weight"], sd[f"{p}.ffn.w2.weight"]))
        assert np.array_equal(tensors[f"blk.{i}.ffn_up.weight"], gate_first.numpy())


def test_the_hf_export_converts_to_the_same_file(files: Files, tmp_path: Path) -> None:
    """The exported folder (w1/w2 unpacked, tokenizer padded by the HF target) gives the bytes and keys the
    trainer checkpoint gave; a folder missing one half of a fused pair is refused naming it."""
    out = tmp_path / "from-hf.gguf"
    pyconv.convert(files.hf, out, outtype="f32", model_name="1200", progress=False)
    ours, theirs = gguf.GGUFReader(out), gguf.GGUFReader(files.ggufs["packed", "f32"])
    assert {k: f.contents() for k, f in ours.fields.items()} == {k: f.contents() for k, f in theirs.fields.items()}
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert np.array_equal(a.data, b.data), a.name
    broken = tmp_path / "broken"
    shutil.copytree(files.hf, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.transformer_encoder.1.ffn.w2.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(pyconv.ConversionError, match=rf"^{broken}.*'model\.transformer_encoder\.1\.ffn\.w2\.weight': "
                                                     r"missing, and llama\.cpp's blk\.1\.ffn_up needs it fused"):
        pyconv.convert(broken, tmp_path / "x.gguf", dry_run=True)


@pytest.mark.parametrize("change", ["head_grouped", "fuses"])
def test_a_missing_layout_fix_breaks_parity(files: Files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             change: str) -> None:
    """Without the regroup pyconv writes the rows as llama.cpp's converter does; with w2 first the gate is wrong."""
    tables = registry.catalog().tables
    table = tables["neobert"]
    fuse = table.gguf.fuses[0]
    changes = {"head_grouped": (), "fuses": (dataclasses.replace(fuse, parts=fuse.parts[::-1]),)}
    monkeypatch.setitem(tables, "neobert", dataclasses.replace(table, gguf=dataclasses.replace(table.gguf, **{change: changes[change]})))
    out = tmp_path / "broken.gguf"
    pyconv.convert(files.steps["unpacked"], out, outtype="f32", progress=False)
    assert max_diff(per_token(out, TEXTS[0]), files.reference("unpacked", files.ids[0])) > BROKEN


def test_validate_runs_the_encoder_against_the_hf_export(files: Files, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    proc = run_cli("validate", files.ggufs["packed", "q8_0"], "--reference", files.hf, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert all(c["status"] == "pass" for c in checks.values()), checks
    assert "token embeddings that are finite and differ between tokens" in checks["runtime"]["detail"]
    assert checks["reference"]["data"]["lowest_cosine"] > 0.999
    # rows as llama.cpp's converter writes them: the reference check fails
    tables = registry.catalog().tables
    monkeypatch.setitem(tables, "neobert", dataclasses.replace(tables["neobert"], gguf=dataclasses.replace(tables["neobert"].gguf,
                                                                                                          head_grouped=())))
    stored_rows = tmp_path / "stored-rows.gguf"
    pyconv.convert(files.steps["packed"], stored_rows, outtype="f32", progress=False)
    report = validate(stored_rows, reference=files.hf)
    reference = next(c for c in report.checks if c.name == "reference")
    assert reference.status == "fail" and not report.ok, reference


# --- what llama.cpp cannot compute ---------------------------------------------------------------------


def edit_yaml(step: Path, **model: Any) -> None:
    doc = yaml.safe_load((step / "config.yaml").read_text())
    doc["model"].update(model)
    (step / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


REFUSED = {
    "gelu": (shape(act="gelu", intermediate=96), r"hidden_act is 'gelu', and its FFN is SwiGLU only"),
    "layernorm": (shape(rms_norm=False), r"rms_norm is False, and its norms are RMSNorm without bias"),
    "learned-positions": (shape(rope=False), r"rope is False, and it rotates queries and keys and has no position table"),
}


@pytest.mark.parametrize("variant", list(REFUSED))
def test_variants_llama_cpp_cannot_compute_are_refused(tmp_path: Path, wordpiece: Path, variant: str) -> None:
    s, reason = REFUSED[variant]
    step = wordpiece_step(tmp_path, Run(variant, s, 6), wordpiece)
    with pytest.raises(pyconv.ConversionError, match=rf"^{step}: llama.cpp's 'neo-bert' graph cannot compute this "
                                                     rf"model: {reason}; --to hf exports") as e:
        pyconv.convert(step, tmp_path / "x.gguf", dry_run=True)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x.gguf").exists()


def test_ngpt_is_refused_with_the_reason(tmp_path: Path, wordpiece: Path) -> None:
    step = wordpiece_step(tmp_path, Run("ngpt", SHAPE, 7), wordpiece)
    edit_yaml(step, ngpt=True)
    proc = run_cli("convert", step, "-o", tmp_path / "x.gguf")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "ngpt (NormNeoBERT) cannot be exported" in proc.stderr and "nor does llama.cpp's neo-bert graph" in proc.stderr


# --- the reproducer: llama.cpp's converter's layout --------------------------------------------------------

# I = 192: int(2I/3) = 128 is already a multiple of 8, so llama.cpp's converter's unrounded
# feed_forward_length and the trainer's I' agree and the file loads either way
REPRO_SHAPE = shape(intermediate=192)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_neobert_gguf(path: Path, s: NeoBERTShape, sd: dict[str, torch.Tensor], *, regroup: bool) -> None:
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.NEO_BERT])
    w.add_context_length(s.max_len)
    w.add_embedding_length(s.hidden)
    w.add_block_count(s.layers)
    w.add_feed_forward_length(s.ffn_width)
    w.add_head_count(s.heads)
    w.add_layer_norm_rms_eps(s.eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.NONE)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(SPECIALS + [f"\u2581t{i}" for i in range(len(SPECIALS), s.vocab)])
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (s.vocab - len(SPECIALS)))
    for key, token in (("bos", "[CLS]"), ("eos", "[SEP]"), ("pad", "[PAD]"), ("unk", "[UNK]"), ("mask", "[MASK]")):
        getattr(w, f"add_{key}_token_id")(SPECIALS.index(token))
    w.add_tensor("token_embd.weight", sd["model.encoder.weight"].numpy())
    dh = s.hidden // s.heads
    for i in range(s.layers):
        p = f"model.transformer_encoder.{i}"
        qkv = sd[f"{p}.qkv.weight"]
        if regroup:  # rows (head, q/k/v, d) → (q/k/v, head, d)
            qkv = qkv.view(s.heads, 3, dh, s.hidden).transpose(0, 1).reshape(3 * s.hidden, s.hidden)
        w.add_tensor(f"blk.{i}.attn_qkv.weight", qkv.contiguous().numpy())
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[f"{p}.wo.weight"].numpy())
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[f"{p}.attention_norm.weight"].numpy())
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[f"{p}.ffn_norm.weight"].numpy())
        # llama.cpp's SWIGLU applies silu to the first half: the packed w12, gate first
        w.add_tensor(f"blk.{i}.ffn_up.weight", torch.cat((sd[f"{p}.ffn.w1.weight"], sd[f"{p}.ffn.w2.weight"])).numpy())
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[f"{p}.ffn.w3.weight"].numpy())
    w.add_tensor("enc.output_norm.weight", sd["model.layer_norm.weight"].numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_token_embeddings(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's per-token output embeddings for these exact ids (its tokenizer is bypassed)."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

    llm = Llama(str(path), n_ctx=64, n_threads=2, embedding=True, pooling_type=LLAMA_POOLING_TYPE_NONE, verbose=True)
    try:
        llm.tokenize = lambda *_args, **_kwargs: ids  # type: ignore[method-assign]
        return np.asarray(llm.embed("ids given", normalize=False), dtype=np.float32)
    finally:
        llm.close()


def test_llama_cpp_reads_the_fused_qkv_as_thirds(tmp_path: Path) -> None:
    """Rows as stored (what llama.cpp's converter writes) give wrong embeddings; rows regrouped into thirds
    match the training forward. If llama.cpp ever reads the projection per head, the first assertion fails
    and the neo-bert table's ``head_grouped`` should go."""
    sd = trainer_state_dict(REPRO_SHAPE, seed=3)
    ids = [SPECIALS.index("[CLS]"), *torch.randint(5, REPRO_SHAPE.vocab, (10,), generator=torch.Generator().manual_seed(0)).tolist(),
           SPECIALS.index("[SEP]")]
    want = hidden_states(sd, REPRO_SHAPE, torch.tensor([ids]))[0].numpy()
    diffs = {}
    for regroup in (False, True):
        path = tmp_path / f"neobert-{regroup}.gguf"
        write_neobert_gguf(path, REPRO_SHAPE, sd, regroup=regroup)
        diffs[regroup] = max_diff(llama_token_embeddings(path, ids), want)
    assert np.abs(want).max() > 1.0
    assert diffs[False] > BROKEN, diffs      # rows as stored: wrong
    assert diffs[True] < 1e-4, diffs         # rows regrouped into thirds: llama.cpp's graph is otherwise right
