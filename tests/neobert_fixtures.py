"""NeoBERT trainer checkpoints laid out the way its trainer saves them (docs/custom-models.md), with random
weights from ``tests/reference/neobert.py``:

    outputs/<run>/checkpoints/<step>/config.yaml          the run's settings, model: builds the network
    outputs/<run>/checkpoints/<step>/model.safetensors    the portable weights (tied tensors under both names)
    outputs/<run>/checkpoints/<step>/tokenizer/           the run's tokenizer (Metaspace, word level)
    outputs/<run>/checkpoints/<step>/tokenizer_info.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from .reference.neobert import NeoBERTShape, hidden_states, mlm_logits, trainer_state_dict
from .test_remote_code_neobert import VOCAB, write_tokenizer

# the trainer pads its vocabulary to a multiple of 128; the run's saved tokenizer (96 tokens) is shorter
MODEL_VOCAB = 128
STEP = 1200


@dataclass(frozen=True)
class Run:
    """One trainer checkpoint: the shape, and how the trainer revision stored it."""

    name: str
    shape: NeoBERTShape
    seed: int
    packed: bool = False           # xformers' fused ffn.w12 (chandar-lab) instead of w1/w2
    tied: bool = True              # decoder.weight holds the embedding's values
    legacy_decoder: bool = False   # decoder under model.decoder.* (older revisions)
    prefix: str = ""               # torch.compile / DDP wrapper prefix left on every name
    model_extra: dict[str, Any] = field(default_factory=dict)  # more config.yaml model: fields


def shape(**overrides: Any) -> NeoBERTShape:
    base: dict[str, Any] = {"vocab": MODEL_VOCAB, "hidden": 64, "layers": 2, "heads": 4, "intermediate": 200,
                            "max_len": 32}
    return NeoBERTShape(**{**base, **overrides})


def model_section(s: NeoBERTShape, **extra: Any) -> dict[str, Any]:
    return {
        "name": "neobert-tiny", "hidden_size": s.hidden, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        "intermediate_size": s.intermediate, "max_position_embeddings": s.max_len, "vocab_size": s.vocab,
        "rope": s.rope, "rms_norm": s.rms_norm, "hidden_act": s.act, "dropout_prob": 0.0, "norm_eps": s.eps,
        "embedding_init_range": 0.02, "decoder_init_range": 0.02, "classifier_init_range": 0.02,
        "attn_backend": "sdpa", "kernel_backend": "auto", "ngpt": False, "pad_token_id": s.pad_id, "from_hub": False,
        **extra,
    }


def run_config(s: NeoBERTShape, **extra: Any) -> dict[str, Any]:
    return {
        "task": "pretraining",
        "model": model_section(s, **extra),
        "tokenizer": {"name": "tiny-metaspace", "max_length": s.max_len},
        "trainer": {"max_steps": 2000, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                    "mixed_precision": "no", "output_dir": "outputs/tiny"},
        "optimizer": {"name": "adamw", "lr": 3e-4},
        "dataset": {"name": "tiny-corpus"},
    }


def weights(run: Run) -> dict[str, torch.Tensor]:
    """The trainer's state dict for ``run`` (the values the reference forward uses)."""
    sd = trainer_state_dict(run.shape, seed=run.seed)
    if run.tied:
        sd["decoder.weight"] = sd["model.encoder.weight"]
    return sd


def stored(run: Run, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` under the names and layout this trainer revision writes."""
    out: dict[str, torch.Tensor] = {}
    width = run.shape.ffn_width
    for name, t in sd.items():
        if run.packed and name.endswith(".ffn.w1.weight"):
            out[run.prefix + name.replace(".w1.", ".w12.")] = torch.cat((t, sd[name.replace(".w1.", ".w2.")]))
            assert t.shape[0] == width
            continue
        if run.packed and name.endswith(".ffn.w2.weight"):
            continue
        stored = "model." + name if run.legacy_decoder and name.startswith("decoder.") else name
        # the portable file clones tensors that share storage, so a tied decoder is stored twice
        out[run.prefix + stored] = t.clone()
    return out


def write_bpe_tokenizer(folder: Path, max_len: int, texts: list[str]) -> None:
    """A Metaspace BPE tokenizer learnt from ``texts`` (so they round-trip), 5 specials first, as HF files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len, "pad_token": "[PAD]",
            "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
            "model_input_names": ["input_ids", "attention_mask"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))


def write_step(root: Path, run: Run, *, weights_file: bool = True, tokenizer: bool = True,
               info: dict[str, Any] | None = None, texts: list[str] | None = None) -> Path:
    """``root/outputs/<name>/checkpoints/<STEP>/`` for ``run``; returns the step folder."""
    step = root / "outputs" / run.name / "checkpoints" / str(STEP)
    step.mkdir(parents=True)
    (step / "config.yaml").write_text(yaml.safe_dump(run_config(run.shape, **run.model_extra), sort_keys=False))
    if weights_file:
        save_file(stored(run, weights(run)), str(step / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer:
        (step / "tokenizer").mkdir()
        if texts is None:
            write_tokenizer(step / "tokenizer", run.shape.max_len)
        else:
            write_bpe_tokenizer(step / "tokenizer", run.shape.max_len, texts)
    default_info = {"tokenizer_name": "tiny-metaspace", "vocab_size": run.shape.vocab, "base_vocab_size": VOCAB,
                    "total_vocab_size": VOCAB, "pad_token_id": run.shape.pad_id}
    (step / "tokenizer_info.json").write_text(json.dumps(info if info is not None else default_info, indent=2))
    return step


class TrainerModel(nn.Module):
    """The trainer's ``NeoBERTLMHead`` parameter tree (its state-dict names), decoder tied to the embedding,
    computing the reference forward; DeepSpeed trains it to write a real ZeRO checkpoint."""

    def __init__(self, seed: int = 5, **overrides: Any) -> None:
        super().__init__()
        self.shape = shape(**overrides)
        embedding: nn.Parameter | None = None
        for name, value in trainer_state_dict(self.shape, seed=seed).items():
            *path, leaf = name.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            param = nn.Parameter(value.clone())
            if name == "model.encoder.weight":
                embedding = param
            owner.register_parameter(leaf, embedding if name == "decoder.weight" else param)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        sd = dict(self.named_parameters(remove_duplicate=False))
        logits = mlm_logits(sd, hidden_states(sd, self.shape, ids))
        return F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
