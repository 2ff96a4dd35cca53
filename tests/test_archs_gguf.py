"""Every architecture table, proven by running its GGUF: llama.cpp (through llama-cpp-python) gives the
logits (or, for BERT, the embeddings) transformers gives on the same tiny random checkpoint, and
transformers' own GGUF loader reads the file back where it supports the architecture."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

import pyconv
from pyconv import registry
from pyconv.archs import Arch, ExpertStack
from pyconv.families.gemma import GEMMA2
from pyconv.families.llama import MIXTRAL

from .archs_fixtures import (
    FAMILIES,
    LLAMA_SHAPE,
    SAMPLE_TEXTS,
    build_bert,
    build_bert_mlm,
    copy_smollm2_tokenizer,
    rewrite_safetensors,
    save_model,
    train_sentencepiece,
)
from .family_harness import (
    BROKEN,
    F16_TOL,
    F32_TOL,
    GELU_TOL,
    TEXT,
    hf_logits,
    llama_logits,
    max_diff,
    token_ids,
)

# the tolerances are the family harness's: see there why they are what they are
GELU_FAMILIES = {"gemma", "gemma2", "gpt2"}

CAUSAL_CASES = [(name, outtype) for name, fam in FAMILIES.items() for outtype in fam.outtypes]
LOADER_FAMILIES = [name for name, fam in FAMILIES.items() if fam.hf_gguf_loader]


def tolerance(name: str, outtype: str) -> float:
    if outtype == "f16":
        return F16_TOL
    return GELU_TOL if name in GELU_FAMILIES else F32_TOL


class Workshop:
    """Builds each tiny checkpoint, its GGUF files and transformers' logits once per module."""

    def __init__(self, root: Path, smollm2: Path) -> None:
        self.root, self.smollm2 = root, smollm2
        self.folders: dict[str, Path] = {}
        self.ggufs: dict[tuple[str, str], Path] = {}
        self.logits: dict[str, np.ndarray] = {}

    def folder(self, name: str, build: Callable[[Path, Path], None] | None = None) -> Path:
        if name not in self.folders:
            folder = self.root / f"tiny-{name}"
            folder.mkdir()
            (build or FAMILIES[name].build)(folder, self.smollm2)
            self.folders[name] = folder
        return self.folders[name]

    def gguf(self, name: str, outtype: str = "f32") -> Path:
        if (name, outtype) not in self.ggufs:
            out = self.root / f"{name}-{outtype}.gguf"
            pyconv.convert(self.folder(name), out, outtype=outtype, progress=False)
            self.ggufs[name, outtype] = out
        return self.ggufs[name, outtype]

    def ids(self, name: str) -> list[int]:
        return token_ids(self.folder(name))

    def hf_logits(self, name: str) -> np.ndarray:
        if name not in self.logits:
            self.logits[name] = hf_logits(self.folder(name), self.ids(name))
        return self.logits[name]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Workshop:
    return Workshop(tmp_path_factory.mktemp("archs"), smollm2_hf)


@pytest.mark.parametrize(("name", "outtype"), CAUSAL_CASES, ids=[f"{n}-{t}" for n, t in CAUSAL_CASES])
def test_llama_cpp_logits_equal_transformers(shop: Workshop, name: str, outtype: str) -> None:
    want = shop.hf_logits(name)
    assert np.abs(want).max() > 1.0  # logits big enough for the tolerances to mean something
    got = llama_logits(shop.gguf(name, outtype), shop.ids(name))
    assert max_diff(got, want) < tolerance(name, outtype)
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("name", LOADER_FAMILIES)
def test_transformers_gguf_loader_reads_it_back(shop: Workshop, name: str) -> None:
    from transformers import AutoModelForCausalLM

    path = shop.gguf(name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                 attn_implementation="eager")
    # a GGUF named exactly "mistral" would take transformers' mistral path, which fails with gguf-py 0.19
    # ("Unknown gguf model_type: mistral"); under any other name it reads as the llama it is
    assert model.config.model_type == {"mistral": "llama"}.get(name, name)
    with torch.no_grad():
        got = model(torch.tensor([shop.ids(name)])).logits[0].numpy()
    # keys the loader does not read come back as its config defaults; the reference runs with those
    defaults = FAMILIES[name].loader_defaults
    want = hf_logits(shop.folder(name), shop.ids(name), **defaults) if defaults else shop.hf_logits(name)
    assert max_diff(got, want) < F32_TOL


def test_mixtral_experts_stack_the_same_from_either_layout(shop: Workshop) -> None:
    """transformers 5 saves per-expert w1/w2/w3; a state dict saved as is holds them fused
    (gate_up_proj, down_proj). Both give the same GGUF tensors, gate and up in llama.cpp's order."""
    from safetensors.torch import save_file
    from transformers import MixtralForCausalLM

    legacy = shop.folder("mixtral")
    model = MixtralForCausalLM.from_pretrained(legacy, dtype=torch.float32)
    fused = shop.root / "tiny-mixtral-fused"
    fused.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(legacy / f, fused / f)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    save_file(state, fused / "model.safetensors", metadata={"format": "pt"})
    _, info = MixtralForCausalLM.from_pretrained(fused, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    out = shop.root / "mixtral-fused.gguf"
    pyconv.convert(fused, out, outtype="f32", progress=False)
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(shop.gguf("mixtral")).tensors}
    got = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    cfg = model.config
    for kind in (gguf.MODEL_TENSOR.FFN_GATE_EXP, gguf.MODEL_TENSOR.FFN_UP_EXP):
        assert got[gguf.TENSOR_NAMES[kind].format(bid=1) + ".weight"].shape == (
            cfg.num_local_experts, cfg.intermediate_size, cfg.hidden_size)
    assert max_diff(llama_logits(out, shop.ids("mixtral")), shop.hf_logits("mixtral")) < F32_TOL


def test_gpt2_legacy_checkpoint_drops_mask_buffers(shop: Workshop) -> None:
    """Older GPT-2 files have no "transformer." prefix and carry the causal-mask buffers."""
    from transformers import GPT2LMHeadModel

    modern = shop.folder("gpt2")
    legacy = shop.root / "tiny-gpt2-legacy"
    shutil.copytree(modern, legacy)
    cfg = json.loads((modern / "config.json").read_text())
    n_pos = cfg["n_positions"]

    def to_legacy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        for layer in range(cfg["n_layer"]):
            out[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(n_pos, n_pos)).view(1, 1, n_pos, n_pos)
            out[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        return out

    rewrite_safetensors(legacy, to_legacy)
    _, info = GPT2LMHeadModel.from_pretrained(legacy, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"]
    out = shop.root / "gpt2-legacy.gguf"
    pyconv.convert(legacy, out, outtype="f32", progress=False)
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(shop.gguf("gpt2")).tensors}
    got = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


def gate_and_up_swapped(arch: Arch) -> ExpertStack:
    assert arch.gguf.experts is not None
    parts = {"w1": gguf.MODEL_TENSOR.FFN_UP_EXP, "w2": gguf.MODEL_TENSOR.FFN_DOWN_EXP, "w3": gguf.MODEL_TENSOR.FFN_GATE_EXP}
    return dataclasses.replace(arch.gguf.experts, parts=parts)


def without(monkeypatch: pytest.MonkeyPatch, name: str, **gguf_changes: Any) -> None:
    """Table ``name`` with its GGUF part changed, for this test."""
    tables = registry.catalog().tables
    monkeypatch.setitem(tables, name, dataclasses.replace(tables[name], gguf=dataclasses.replace(tables[name].gguf, **gguf_changes)))


# Each layout fix, left out of its table: llama.cpp then disagrees with transformers (or refuses the file).
ABLATIONS = [
    pytest.param("llama", {"permute_qk": False}, id="llama-qk-permutation"),
    pytest.param("qwen2", {"skip": (r"_proj\.bias$",)}, id="qwen2-qkv-biases"),
    pytest.param("gemma", {"norm_shift": 0.0}, id="gemma-norm-shift"),
    pytest.param("gemma", {"constants": ()}, id="gemma-no-space-prefix"),  # only tokenization changes
    pytest.param("gemma2", {"norm_shift": 0.0}, id="gemma2-norm-shift"),
    pytest.param("gemma2", {"hparams": tuple(h for h in GEMMA2.gguf.hparams if "softcapping" not in h.method)},
                 id="gemma2-softcapping"),
    pytest.param("gemma2", {"hparams": tuple(h for h in GEMMA2.gguf.hparams if h.method != "add_sliding_window")},
                 id="gemma2-sliding-window"),
    pytest.param("gpt2", {"transposed": ()}, id="gpt2-conv1d-transpose"),
    pytest.param("mixtral", {"experts": gate_and_up_swapped(MIXTRAL)}, id="mixtral-gate-up-order"),
]


@pytest.mark.parametrize(("name", "changes"), ABLATIONS)
def test_a_missing_layout_fix_breaks_parity(shop: Workshop, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
                                             tmp_path: Path, name: str, changes: dict[str, Any]) -> None:
    without(monkeypatch, name, **changes)
    out = tmp_path / f"{name}.gguf"
    pyconv.convert(shop.folder(name), out, outtype="f32", progress=False)
    if "constants" in changes:
        assert llama_tokens(out, TEXT) != sentencepiece_ids(shop.folder(name), TEXT)
    elif "transposed" in changes:
        with pytest.raises(ValueError, match="Failed to load model"):
            llama_logits(out, shop.ids(name))
        qkv = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ATTN_QKV].format(bid=0)
        assert f"'{qkv}.weight' has wrong shape" in capfd.readouterr().err
    else:
        assert max_diff(llama_logits(out, shop.ids(name)), shop.hf_logits(name)) > BROKEN


def llama_tokens(path: Path, text: str, *, add_bos: bool = False) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(str(path), vocab_only=True, verbose=True)
    try:
        return list(llm.tokenize(text.encode(), add_bos=add_bos, special=True))
    finally:
        llm.close()


def sentencepiece_ids(folder: Path, text: str) -> list[int]:
    import sentencepiece as spm

    return [int(i) for i in spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(text)]


@pytest.mark.parametrize("name", ["gemma", "phi3"])
def test_llama_cpp_tokenizes_like_sentencepiece(shop: Workshop, name: str) -> None:
    """Gemma's pieces take no dummy space prefix, Llama 2 / Phi-3's do: llama.cpp must follow each."""
    path = shop.gguf(name)
    for text in [*SAMPLE_TEXTS, "  two leading spaces", "tabs\tand\nnewlines"]:
        assert llama_tokens(path, text) == sentencepiece_ids(shop.folder(name), text), text


# --- BERT: an encoder, so llama.cpp's embeddings against transformers' hidden states -------------------


def llama_embeddings(path: Path, text: str, pooling: int) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=64, n_threads=2, embedding=True, pooling_type=pooling, verbose=True)
    try:
        return np.asarray(llm.embed(text, normalize=False), dtype=np.float32)
    finally:
        llm.close()


def bert_hidden(folder: Path, text: str) -> tuple[list[int], np.ndarray]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertModel

    ids = AutoTokenizer.from_pretrained(folder)(text).input_ids
    config = json.loads((folder / "config.json").read_text())
    encoder = (BertModel.from_pretrained(folder, dtype=torch.float32) if config["architectures"] == ["BertModel"]
               else AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.float32).bert)
    with torch.no_grad():
        return ids, encoder(torch.tensor([ids])).last_hidden_state[0].numpy()


@pytest.fixture(scope="module", params=["bert", "bert-mlm"])
def bert_case(request: pytest.FixtureRequest, shop: Workshop) -> tuple[Path, Path]:
    """(folder, f32 GGUF) of a BertModel with sentence-transformers mean pooling, and of a
    BertForMaskedLM (encoder under ``bert.``, MLM head under ``cls.``)."""
    build = build_bert if request.param == "bert" else build_bert_mlm
    folder = shop.folder(request.param, build)
    out = shop.root / f"{request.param}.gguf"
    if not out.exists():
        pyconv.convert(folder, out, outtype="f32", progress=False)
    return folder, out


def test_bert_embeddings_equal_transformers(bert_case: tuple[Path, Path]) -> None:
    from llama_cpp import (
        LLAMA_POOLING_TYPE_CLS,
        LLAMA_POOLING_TYPE_MEAN,
        LLAMA_POOLING_TYPE_NONE,
    )

    folder, path = bert_case
    for text in SAMPLE_TEXTS:
        ids, hidden = bert_hidden(folder, text)
        assert llama_tokens(path, text, add_bos=True) == ids, text  # [CLS] … [SEP], WordPiece pieces
        assert np.abs(hidden).max() > 1.0
        per_token = llama_embeddings(path, text, LLAMA_POOLING_TYPE_NONE)
        assert max_diff(per_token, hidden) < GELU_TOL
        assert max_diff(llama_embeddings(path, text, LLAMA_POOLING_TYPE_MEAN), hidden.mean(0)) < GELU_TOL
        assert max_diff(llama_embeddings(path, text, LLAMA_POOLING_TYPE_CLS), hidden[0]) < GELU_TOL


def test_bert_metadata_says_encoder_and_pooling(bert_case: tuple[Path, Path]) -> None:
    from llama_cpp import LLAMA_POOLING_TYPE_UNSPECIFIED

    folder, path = bert_case
    fields = gguf.GGUFReader(path).fields
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT]
    assert fields[gguf.Keys.Attention.CAUSAL.format(arch=arch)].contents() is False
    assert fields[gguf.Keys.Tokenizer.TOKEN_TYPE_COUNT].contents() == 2
    assert fields[gguf.Keys.Tokenizer.MODEL].contents() == "bert"
    pooling = fields.get(gguf.Keys.LLM.POOLING_TYPE.format(arch=arch))
    if (folder / "modules.json").exists():
        assert pooling is not None and pooling.contents() == gguf.PoolingType.MEAN
        # llama.cpp pools the way the file says when not told otherwise
        text = SAMPLE_TEXTS[0]
        _, hidden = bert_hidden(folder, text)
        assert max_diff(llama_embeddings(path, text, LLAMA_POOLING_TYPE_UNSPECIFIED), hidden.mean(0)) < GELU_TOL
    else:
        assert pooling is None


def test_bert_without_its_prefix_rule_is_refused(shop: Workshop, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shop.folder("bert-mlm", build_bert_mlm)
    tables = registry.catalog().tables
    monkeypatch.setitem(tables, "bert", dataclasses.replace(tables["bert"], prefixes=()))
    with pytest.raises(pyconv.ConversionError, match=re.escape("bert.embeddings")):
        pyconv.convert(folder, shop.root / "x.gguf", dry_run=True)


# --- where llama.cpp's graph differs from transformers, no conversion can help ------------------------


def test_known_graph_differences_llama_cpp_has(shop: Workshop) -> None:
    """Reproducers, so that a llama.cpp change shows up here:
    - its llama graph has no sliding window (Mistral's ``sliding_window`` is ignored), and its phi3 graph
      switches a sliding window off on purpose: positions within the window agree, later ones do not;
    - its gemma2 graph scales queries by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for the 27B), not by
      ``query_pre_attn_scalar``: only position 0, which attends to itself alone, agrees."""
    import transformers

    def mistral(out: Path, smollm2: Path) -> None:
        save_model(transformers.MistralForCausalLM, transformers.MistralConfig(**LLAMA_SHAPE, sliding_window=4), out, 21)
        copy_smollm2_tokenizer(smollm2, out)

    def phi3(out: Path, _smollm2: Path) -> None:
        cfg = transformers.Phi3Config(**{**LLAMA_SHAPE, "vocab_size": train_sentencepiece(out, gemma=False),
                                         "pad_token_id": 0, "sliding_window": 4, "original_max_position_embeddings": 128})
        save_model(transformers.Phi3ForCausalLM, cfg, out, 22)

    def gemma2(out: Path, _smollm2: Path) -> None:
        cfg = transformers.Gemma2Config(**{**LLAMA_SHAPE, "vocab_size": train_sentencepiece(out, gemma=True),
                                           "head_dim": 16, "query_pre_attn_scalar": 64})
        save_model(transformers.Gemma2ForCausalLM, cfg, out, 23)

    for name, build, agree in (("mistral-swa", mistral, 4), ("phi3-swa", phi3, 4), ("gemma2-scalar", gemma2, 1)):
        folder = shop.folder(name, build)
        out = shop.root / f"{name}.gguf"
        pyconv.convert(folder, out, outtype="f32", progress=False)
        ids = token_ids(folder)
        want, got = hf_logits(folder, ids), llama_logits(out, ids)
        tol = GELU_TOL if name.startswith("gemma") else F32_TOL
        assert max_diff(got[:agree], want[:agree]) < tol, name
        assert max_diff(got[agree:], want[agree:]) > BROKEN, name


# --- tables --------------------------------------------------------------------------------------------




def test_phi3_long_context_rope_factors_are_refused(shop: Workshop, tmp_path: Path) -> None:
    folder = tmp_path / "phi3-128k"
    shutil.copytree(shop.folder("phi3"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"].update(rope_type="longrope", long_factor=[1.0] * 8, short_factor=[1.0] * 8)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(pyconv.ConversionError, match="long-context rope factors"):
        pyconv.convert(folder, tmp_path / "x.gguf", dry_run=True)
