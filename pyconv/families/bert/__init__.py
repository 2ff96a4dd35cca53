"""BERT as llama.cpp runs it: a non-causal encoder giving embeddings. Word, position and token-type
embeddings; the pooler and the pre-training heads are dropped (llama.cpp pools the last hidden states
itself, the way a sentence-transformers folder says); BertFor* checkpoints keep the encoder under
``bert.``."""

from __future__ import annotations

import json

import gguf

from ...archs.arch import Arch
from ...archs.config import Config
from ...archs.gguf_layout import GgufLayout
from ...archs.hparams import COMMON_HPARAMS, HParam
from ...archs.proof import LOGITS_TESTS, Proof
from ...errors import ConversionError
from ...family import Family

# sentence-transformers' Pooling config: flag (or pooling_mode value) → llama.cpp pooling
POOLING_FLAGS = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
    "pooling_mode_lasttoken": gguf.PoolingType.LAST,
}
POOLING_MODES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}


def sentence_transformers_pooling(cfg: Config) -> gguf.PoolingType | None:
    """The pooling of the folder's sentence-transformers Pooling module (modules.json), if it has one."""
    if cfg.folder is None or not (cfg.folder / "modules.json").is_file():
        return None
    modules = json.loads((cfg.folder / "modules.json").read_text(encoding="utf-8"))
    path = next((m["path"] for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if path is None:
        return None
    pooling_file = cfg.folder / path / "config.json"
    pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
    for flag, kind in POOLING_FLAGS.items():
        if pooling.get(flag):
            return kind
    if pooling.get("pooling_mode") in POOLING_MODES:
        return POOLING_MODES[pooling["pooling_mode"]]
    raise ConversionError(f"llama.cpp pools by {', '.join(POOLING_MODES)} only; this pooling is none of them",
                          file=pooling_file)


BERT = Arch(
    name="bert",
    hf_architectures=("BertModel", "BertForMaskedLM"),
    model_types=("bert",),
    gguf=GgufLayout(
        gguf.MODEL_ARCH.BERT,
        hparams=(
            *COMMON_HPARAMS,
            HParam("add_token_type_count", ("type_vocab_size",)),
            HParam("add_pooling_type", derive=sentence_transformers_pooling, required=False),
        ),
        constants=(("add_causal_attention", False),),
        skip=(r"^pooler\.", r"^cls\.", r"^embeddings\.position_ids$"),
    ),
    prefixes=("bert.",),
    proof=Proof(("f32",), against="transformers' hidden states (per token, mean and CLS pooled)", tests=(LOGITS_TESTS,)),
)

FAMILY = Family("bert", (BERT,))
