"""NeoBERT remote code: exported folders load cleanly on transformers 5 and compute what the trainer computes.

Folders are written by hand from trainer-layout state dicts (random, seeded); a fresh process loads them with
``trust_remote_code=True`` and its outputs are compared with ``tests/reference/neobert.py``, a forward pass
written from the spec, never with pyconv's modeling code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers.dynamic_module_utils import get_relative_import_files

from pyconv.families.neobert.remote_code.modeling_neobert import (
    NeoBERT,
    NeoBERTConfig,
    NeoBERTForSequenceClassification,
    NeoBERTLMHead,
)

from .reference.hf_folder import assert_clean_load, job, remote_code, run_probe, write_export
from .reference.neobert import (
    NeoBERTShape,
    additive_pad_mask,
    classifier_logits,
    hidden_states,
    mlm_logits,
    trainer_state_dict,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["▁", "▁paris", "▁is", "▁the", "▁capital", "▁of", "▁france", "▁."]
VOCAB = 96
MASK_ID = SPECIALS.index("[MASK]")
# ids of ordinary words: never the pad id, so the learned-position numbering sees only real tokens
WORD_IDS = (len(SPECIALS), VOCAB)

# A: the pszemraj default (SwiGLU, RMSNorm, RoPE, tied decoder); I=200 rounds to a SwiGLU width of 136
ROPE_TIED = NeoBERTShape(vocab=VOCAB, hidden=64, layers=2, heads=4, intermediate=200, max_len=32)
# B: every other switch (GELU, LayerNorm, learned positions, untied decoder with chandar-lab's bias)
LEARNED_UNTIED = NeoBERTShape(
    vocab=VOCAB, hidden=64, layers=2, heads=4, intermediate=96, max_len=32,
    rope=False, rms_norm=False, act="gelu", decoder_bias=True,
)
NUM_LABELS = 3
LENGTHS = (12, 7, 4)
TOL = {"rtol": 1e-4, "atol": 1e-5}
AUTO_MAP = {
    "AutoConfig": "modeling_neobert.NeoBERTConfig",
    "AutoModel": "modeling_neobert.NeoBERT",
    "AutoModelForMaskedLM": "modeling_neobert.NeoBERTLMHead",
    "AutoModelForSequenceClassification": "modeling_neobert.NeoBERTForSequenceClassification",
}


def hf_config(shape: NeoBERTShape, *, architecture: str, tied: bool, **extra: Any) -> NeoBERTConfig:
    return NeoBERTConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_len,
        norm_eps=shape.eps,
        pad_token_id=shape.pad_id,
        rope=shape.rope,
        rms_norm=shape.rms_norm,
        hidden_act=shape.act,
        decoder_bias=shape.decoder_bias,
        tie_word_embeddings=tied,
        architectures=[architecture],
        auto_map=AUTO_MAP,
        **extra,
    )


def write_tokenizer(folder: Path, max_len: int) -> Tokenizer:
    """A word-level tokenizer with a Metaspace pre-tokenizer, saved as the HF fast-tokenizer files."""
    fillers = [f"▁w{i}" for i in range(VOCAB - len(SPECIALS) - len(WORDS))]
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + fillers)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return tok


def padded_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [3, 12] with pad id 0, and the 1/0 keep mask."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(LENGTHS), max(LENGTHS), dtype=torch.long)
    keep = torch.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = torch.randint(*WORD_IDS, (length,), generator=gen)
        keep[row, :length] = 1
    return ids, keep


def mask_spellings(ids: torch.Tensor, keep: torch.Tensor) -> list[dict[str, Any]]:
    """The same keep-pattern as int, bool and two additive masks, each sequence alone, and no mask at all."""
    lowest = torch.zeros(keep.shape).masked_fill(keep == 0, torch.finfo(torch.float32).min)
    calls = [
        {"name": "int", "kwargs": {"input_ids": ids, "attention_mask": keep}},
        {"name": "bool", "kwargs": {"input_ids": ids, "attention_mask": keep.bool()}},
        {"name": "additive_inf", "kwargs": {"input_ids": ids, "attention_mask": additive_pad_mask(keep)}},
        {"name": "additive_min", "kwargs": {"input_ids": ids, "attention_mask": lowest}},
        {"name": "no_mask", "kwargs": {"input_ids": ids[:1]}},
        {"name": "all_ones", "kwargs": {"input_ids": ids[:1], "attention_mask": keep[:1]}},
    ]
    calls += [
        {"name": f"alone_{row}", "kwargs": {"input_ids": ids[row : row + 1, :length]}}
        for row, length in enumerate(LENGTHS)
    ]
    return calls


class Exports:
    """The folders, their trainer weights, and everything the probe recorded about them."""

    def __init__(self, root: Path) -> None:
        self.tied_sd = trainer_state_dict(ROPE_TIED, seed=1)
        # a tied trainer checkpoint holds the same matrix twice; the export ships the source key only
        self.tied_sd["decoder.weight"] = self.tied_sd["model.encoder.weight"]
        self.untied_sd = trainer_state_dict(LEARNED_UNTIED, seed=2)
        self.cls_sd = trainer_state_dict(ROPE_TIED, seed=3, num_labels=NUM_LABELS)

        self.tied_dir = write_export(
            root / "rope-tied", "neobert", hf_config(ROPE_TIED, architecture="NeoBERTLMHead", tied=True),
            {k: v for k, v in self.tied_sd.items() if k != "decoder.weight"},
        )
        self.tokenizer = write_tokenizer(self.tied_dir, ROPE_TIED.max_len)
        self.untied_dir = write_export(
            root / "learned-untied", "neobert",
            hf_config(LEARNED_UNTIED, architecture="NeoBERTLMHead", tied=False), self.untied_sd,
        )
        self.cls_dir = write_export(
            root / "classifier", "neobert",
            hf_config(ROPE_TIED, architecture="NeoBERTForSequenceClassification", tied=False, num_labels=NUM_LABELS),
            self.cls_sd,
        )

        self.ids, self.keep = padded_batch(seed=4)
        picked = torch.rand(self.ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3
        self.labels = torch.where(picked & (self.keep == 1), self.ids, -100)
        self.cls_labels = torch.tensor([0, 2, 1])
        self.fill_text = "paris is the [MASK] of france ."
        self.resaved_dir = root / "resaved"

        def padded(name: str, **extra: Any) -> dict[str, Any]:
            return {"name": name, "kwargs": {"input_ids": self.ids, "attention_mask": self.keep, **extra}}

        def load(name: str, auto: str, folder: Path, calls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {"name": name, "kind": "load", "auto": auto, "dir": str(folder), "calls": calls, **extra}

        lm_calls = mask_spellings(self.ids, self.keep) + [
            padded("labels", labels=self.labels),
            padded("tuple", return_dict=False),
            padded("token_types", token_type_ids=torch.ones_like(self.ids)),
        ]
        masked_lm, classifier = "AutoModelForMaskedLM", "AutoModelForSequenceClassification"
        self.results = run_probe(
            [
                load("tied", masked_lm, self.tied_dir, lm_calls, save_to=str(self.resaved_dir)),
                load("resaved", masked_lm, self.resaved_dir, [padded("int")]),
                load("untied", masked_lm, self.untied_dir, mask_spellings(self.ids, self.keep)),
                load("base", "AutoModel", self.tied_dir, [padded("int")]),
                load("classifier", classifier, self.cls_dir, [padded("labels", labels=self.cls_labels)]),
                load("lm_as_classifier", classifier, self.tied_dir, [padded("int")]),
                {"name": "fill_mask", "kind": "fill_mask", "dir": str(self.tied_dir), "text": self.fill_text,
                 "top_k": 5},
            ],
            root,
        )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("neobert-exports"))


def reference_logits(
    sd: dict[str, torch.Tensor], shape: NeoBERTShape, ids: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    mask = additive_pad_mask(keep) if keep is not None else None
    return mlm_logits(sd, hidden_states(sd, shape, ids, mask))


def real_tokens(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return x[keep.bool()]


@pytest.mark.parametrize("name", ["tied", "untied", "base", "classifier"])
def test_folder_loads_without_missing_unexpected_or_warnings(exports: Exports, name: str) -> None:
    entry = job(exports.results, name)
    assert_clean_load(entry)
    assert entry["training"] is False
    expected = {"tied": "NeoBERTLMHead", "untied": "NeoBERTLMHead", "base": "NeoBERT",
                "classifier": "NeoBERTForSequenceClassification"}
    assert entry["class"] == expected[name]


def test_masked_lm_matches_training_forward(exports: Exports) -> None:
    for name, sd, shape in (("tied", exports.tied_sd, ROPE_TIED), ("untied", exports.untied_sd, LEARNED_UNTIED)):
        got = job(exports.results, name)["outputs"]["int"]["logits"]
        want = reference_logits(sd, shape, exports.ids, exports.keep)
        torch.testing.assert_close(real_tokens(got, exports.keep), real_tokens(want, exports.keep), **TOL)


def test_naive_qkv_thirds_or_rotate_half_would_not_match(exports: Exports) -> None:
    """The exported model is far from the naive readings of the trainer's layout, so parity pins the layout."""
    mask = additive_pad_mask(exports.keep)
    for name, sd, shape in (("tied", exports.tied_sd, ROPE_TIED), ("untied", exports.untied_sd, LEARNED_UNTIED)):
        got = job(exports.results, name)["outputs"]["int"]["logits"]
        thirds = mlm_logits(sd, hidden_states(sd, shape, exports.ids, mask, qkv="thirds"))
        assert real_tokens(thirds - got, exports.keep).abs().max() > 1.0, name
    got = job(exports.results, "tied")["outputs"]["int"]["logits"]
    halves = mlm_logits(
        exports.tied_sd, hidden_states(exports.tied_sd, ROPE_TIED, exports.ids, mask, rope_pairs="halves")
    )
    assert real_tokens(halves - got, exports.keep).abs().max() > 1.0


def test_decoder_is_tied_or_untied_as_the_config_says(exports: Exports) -> None:
    assert job(exports.results, "tied")["shared"] == [["decoder.weight", "model.encoder.weight"]]
    assert job(exports.results, "untied")["shared"] == []


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_attention_mask_spellings_agree(exports: Exports, name: str) -> None:
    outputs = job(exports.results, name)["outputs"]
    assert torch.equal(outputs["no_mask"]["logits"], outputs["all_ones"]["logits"])
    for spelling in ("bool", "additive_inf", "additive_min"):
        assert torch.equal(outputs[spelling]["logits"], outputs["int"]["logits"]), spelling


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_padding_does_not_change_real_tokens(exports: Exports, name: str) -> None:
    outputs = job(exports.results, name)["outputs"]
    for row, length in enumerate(LENGTHS):
        torch.testing.assert_close(outputs["int"]["logits"][row, :length], outputs[f"alone_{row}"]["logits"][0], **TOL)


def test_loaded_model_saves_and_reloads_identically(exports: Exports) -> None:
    """The upstream export cannot be re-saved on transformers 5 (a generation-named config field); ours can."""
    entry = job(exports.results, "resaved")
    assert_clean_load(entry)
    assert torch.equal(entry["outputs"]["int"]["logits"], job(exports.results, "tied")["outputs"]["int"]["logits"])
    assert {p.name for p in remote_code("neobert")} <= {p.name for p in exports.resaved_dir.iterdir()}
    saved = json.loads((exports.resaved_dir / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP and saved["tie_word_embeddings"] is True


def test_token_type_ids_from_bert_style_tokenizers_are_accepted(exports: Exports) -> None:
    outputs = job(exports.results, "tied")["outputs"]
    assert torch.equal(outputs["token_types"]["logits"], outputs["int"]["logits"])


def test_masked_lm_loss_and_tuple_output(exports: Exports) -> None:
    outputs = job(exports.results, "tied")["outputs"]
    want = reference_logits(exports.tied_sd, ROPE_TIED, exports.ids, exports.keep)
    loss = torch.nn.functional.cross_entropy(want.flatten(0, 1), exports.labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(outputs["labels"]["loss"], loss, **TOL)
    as_tuple = outputs["tuple"]
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_tuple[0], outputs["int"]["logits"])


def test_base_model_hidden_states_match(exports: Exports) -> None:
    got = job(exports.results, "base")["outputs"]["int"]["last_hidden_state"]
    want = hidden_states(exports.tied_sd, ROPE_TIED, exports.ids, additive_pad_mask(exports.keep))
    torch.testing.assert_close(real_tokens(got, exports.keep), real_tokens(want, exports.keep), **TOL)


def test_sequence_classification_matches_trainer_head(exports: Exports) -> None:
    out = job(exports.results, "classifier")["outputs"]["labels"]
    hidden = hidden_states(exports.cls_sd, ROPE_TIED, exports.ids, additive_pad_mask(exports.keep))
    want = classifier_logits(exports.cls_sd, hidden)
    torch.testing.assert_close(out["logits"], want, **TOL)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(want, exports.cls_labels), **TOL)


def test_masked_lm_checkpoint_gets_a_fresh_classification_head(exports: Exports) -> None:
    entry = job(exports.results, "lm_as_classifier")
    assert entry["info"]["missing_keys"] == ["classifier.bias", "classifier.weight", "dense.bias", "dense.weight"]
    assert entry["info"]["unexpected_keys"] == []
    # the probe does hear load warnings, so the empty lists asserted elsewhere mean something
    assert any("LOAD REPORT" in message for message in entry["warnings"])
    logits = entry["outputs"]["int"]["logits"]
    assert logits.shape == (len(LENGTHS), 2) and torch.isfinite(logits).all()


def test_metaspace_puts_a_lone_marker_before_a_typed_mask(exports: Exports) -> None:
    entry = job(exports.results, "fill_mask")
    tokens = entry["tokens"]
    assert tokens == ["[CLS]", "▁paris", "▁is", "▁the", "▁", "[MASK]", "▁of", "▁france", "▁.", "[SEP]"]
    # the probe's transformers tokenizer and the tokenizers library agree on the ids
    assert entry["input_ids"] == exports.tokenizer.encode(exports.fill_text).ids


def test_fill_mask_pipeline_end_to_end(exports: Exports) -> None:
    entry = job(exports.results, "fill_mask")
    assert entry["warnings"] == []
    ids = torch.tensor([entry["input_ids"]])
    where = entry["input_ids"].index(MASK_ID)
    probs = reference_logits(exports.tied_sd, ROPE_TIED, ids)[0, where].softmax(-1)
    top = probs.topk(5)
    predictions = entry["predictions"]
    assert [p["token"] for p in predictions] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([p["score"] for p in predictions]), top.values, **TOL)
    assert all("[MASK]" not in p["sequence"] for p in predictions)


# In-process checks of the files themselves (no folder needed).


def test_shipped_files_are_exactly_what_transformers_needs() -> None:
    files = remote_code("neobert")
    assert [f.name for f in files] == ["modeling_neobert.py", "rotary.py"]
    reached = {Path(p).name for p in get_relative_import_files(str(files[0]))}
    assert reached | {files[0].name} == {f.name for f in files}


def small_config(**overrides: Any) -> NeoBERTConfig:
    base = {"vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 48, "max_position_embeddings": 8}
    return NeoBERTConfig(**{**base, **overrides})


def test_config_rejects_what_the_model_cannot_build() -> None:
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        small_config(hidden_act="relu")
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        small_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="head size must be even"):
        small_config(hidden_size=30, num_attention_heads=2)
    assert small_config(hidden_act="SwiGLU").hidden_act == "swiglu"


def test_config_saves_without_generation_fields(tmp_path: Path) -> None:
    small_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["max_position_embeddings"] == 8 and saved["norm_eps"] == 1e-6
    assert "max_length" not in saved and saved["tie_word_embeddings"] is True


def test_too_long_input_is_refused() -> None:
    model = NeoBERTLMHead(small_config()).eval()
    with pytest.raises(ValueError, match="9 tokens exceed max_position_embeddings 8"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_flash_attention_flag_is_only_a_hint() -> None:
    torch.manual_seed(0)
    plain = NeoBERTLMHead(small_config()).eval()
    hinted = NeoBERTLMHead(small_config(flash_attention=True)).eval()
    hinted.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 40, (2, 8))
    assert torch.equal(plain(ids).logits, hinted(ids).logits)


def test_attention_mask_shape_is_checked_and_zero_bias_means_no_mask() -> None:
    torch.manual_seed(0)
    model = NeoBERTLMHead(small_config()).eval()
    ids = torch.randint(1, 40, (2, 8))
    assert torch.equal(model(ids, attention_mask=torch.zeros(2, 8)).logits, model(ids).logits)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 7\), expected \(2, 8\)"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    model = NeoBERTLMHead(small_config(dropout=0.5))
    ids = torch.randint(1, 40, (2, 8))
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("tied", [True, False])
def test_resizing_the_vocabulary_follows_the_tie(tied: bool) -> None:
    torch.manual_seed(0)
    model = NeoBERTLMHead(small_config(tie_word_embeddings=tied, decoder_bias=not tied))
    model.resize_token_embeddings(48)
    assert model.config.vocab_size == 48 and model.model.encoder.weight.shape == (48, 32)
    assert model.decoder.weight.shape == (48, 32)
    assert (model.decoder.weight is model.model.encoder.weight) is tied
    if not tied:
        assert model.decoder.bias is not None and model.decoder.bias.shape == (48,)
    assert model(torch.tensor([[47, 1, 2]])).logits.shape == (1, 3, 48)


def test_fresh_weights_follow_the_trainer_init() -> None:
    torch.manual_seed(0)
    config = small_config(classifier_init_range=0.5, decoder_init_range=0.1)
    model = NeoBERTForSequenceClassification(config)
    assert model.classifier.weight.std().item() == pytest.approx(0.5, rel=0.3)
    assert torch.equal(model.classifier.bias, torch.zeros(2)) and torch.equal(model.dense.bias, torch.zeros(32))
    qkv = model.model.transformer_encoder[0].qkv.weight
    assert qkv.abs().max() <= 0.1 and qkv.std() > 0.04
    assert torch.equal(model.model.layer_norm.weight, torch.ones(32))
    assert model.model.encoder.padding_idx == config.pad_token_id == 0
    learned = NeoBERT(small_config(rope=False, pad_token_id=3))
    assert learned.encoder.padding_idx == 3 and learned.positional_embedding.padding_idx == 3
    assert learned.positional_embedding.num_embeddings == 9
    layer_norm = NeoBERT(small_config(rms_norm=False)).layer_norm
    assert isinstance(layer_norm, torch.nn.LayerNorm)
    assert torch.equal(layer_norm.weight, torch.ones(32)) and torch.equal(layer_norm.bias, torch.zeros(32))
