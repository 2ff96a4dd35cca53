"""NeoBERT (chandar-lab/NeoBERT and its pszemraj fork): a pre-norm encoder with a fused QKV projection
grouped per head, RoPE on adjacent channel pairs (or a learned position table), a SwiGLU or GELU FFN
and a masked-LM decoder. Trainer checkpoints keep the whole run's settings in ``config.yaml``; this
module says which of them make the model, how they become the HF ``config.json`` of the exported
``NeoBERTLMHead`` (our modeling code in ``remote_code/``) and which tensors, of which shapes, that
model has. Facts: docs/custom-models.md, "NeoBERT".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import ConversionError

MODEL_TYPE = "neobert"
ARCHITECTURE = "NeoBERTLMHead"
AUTO_MAP = {
    "AutoConfig": "modeling_neobert.NeoBERTConfig",
    "AutoModel": "modeling_neobert.NeoBERT",
    "AutoModelForMaskedLM": "modeling_neobert.NeoBERTLMHead",
    "AutoModelForSequenceClassification": "modeling_neobert.NeoBERTForSequenceClassification",
}
ACTIVATIONS = ("swiglu", "gelu")

# config.json field ← the config.yaml ``model:`` spellings trainer revisions used, first found wins
REQUIRED: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "hidden_size": ("hidden_size",),
    "num_hidden_layers": ("num_hidden_layers",),
    "num_attention_heads": ("num_attention_heads",),
    "intermediate_size": ("intermediate_size",),
    "max_position_embeddings": ("max_position_embeddings",),
    "norm_eps": ("norm_eps", "layer_norm_eps"),
    "pad_token_id": ("pad_token_id",),
    "rope": ("rope",),
    "rms_norm": ("rms_norm",),
    "hidden_act": ("hidden_act",),
}
# optional fields and the value the trainer assumes when config.yaml leaves them out
OPTIONAL: dict[str, tuple[tuple[str, ...], Any]] = {
    "dropout": (("dropout_prob", "dropout"), 0.0),
    "embedding_init_range": (("embedding_init_range",), 0.02),
    "decoder_init_range": (("decoder_init_range",), 0.02),
    "classifier_init_range": (("classifier_init_range",), 0.02),
}
# run settings worth keeping with the export, under config.json's training_info: (section, key)
TRAINING_INFO = {
    "max_steps": ("trainer", "max_steps"),
    "num_train_epochs": ("trainer", "num_train_epochs"),
    "per_device_train_batch_size": ("trainer", "per_device_train_batch_size"),
    "gradient_accumulation_steps": ("trainer", "gradient_accumulation_steps"),
    "mixed_precision": ("trainer", "mixed_precision"),
    "optimizer": ("optimizer", "name"),
    "learning_rate": ("optimizer", "lr"),
    "dataset": ("dataset", "name"),
    "tokenizer": ("tokenizer", "name"),
}
NGPT_REASON = ("ngpt (NormNeoBERT) cannot be exported: its layers keep hidden states, queries and keys on the unit "
               "sphere with learned scalers (attn_alpha, mlp_alpha, sqk, suv) instead of RMSNorm weights, and its "
               "FFN gates on the second half of c_fc; NeoBERT's modeling code computes none of that, nor does llama.cpp's "
               "neo-bert graph")
# the names the trainer gives the placeholder tokens it adds to reach the model's vocabulary
EXTRA_TOKEN = "<|neobert_extra_token_{}|>"


def swiglu_width(intermediate_size: int) -> int:
    """The trainer's SwiGLU hidden width I': two thirds of I, rounded up to a multiple of 8."""
    return 8 * -(-int(2 * intermediate_size / 3) // 8)


def ffn_width(config: Mapping[str, Any]) -> int:
    size = int(config["intermediate_size"])
    return swiglu_width(size) if config["hidden_act"] == "swiglu" else size


def _find(model: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((model[n] for n in names if model.get(n) is not None), None)


def hf_config(model: Mapping[str, Any], run: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """config.json of the export from config.yaml's ``model:`` section (``run`` is the whole file); the
    decoder's tie is the checkpoint's to tell and is set by the reader."""
    if model.get("ngpt"):
        raise ConversionError(NGPT_REASON, file=where)
    missing = [field for field, names in REQUIRED.items() if _find(model, names) is None]
    if missing:
        raise ConversionError(f"model: has no {', '.join(missing)}, which the export needs", file=where)
    config: dict[str, Any] = {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, "auto_map": dict(AUTO_MAP)}
    config.update({field: _find(model, names) for field, names in REQUIRED.items()})
    config["hidden_act"] = str(config["hidden_act"]).lower()
    if config["hidden_act"] not in ACTIVATIONS:
        raise ConversionError(f"model.hidden_act {config['hidden_act']!r} is not one of {', '.join(ACTIVATIONS)}", file=where)
    for field, (names, default) in OPTIONAL.items():
        found = _find(model, names)
        config[field] = default if found is None else found
    # the fused kernel only changes speed: the exported code picks its own through scaled_dot_product_attention
    backend = model.get("attn_backend", model.get("attention_backend"))
    config["flash_attention"] = bool(model.get("flash_attention")) if backend is None else str(backend) != "sdpa"
    config["decoder_bias"] = False
    sections = {k: v for k, v in run.items() if isinstance(v, Mapping)}
    info = {key: sections.get(section, {}).get(field) for key, (section, field) in TRAINING_INFO.items()}
    config["training_info"] = {k: v for k, v in info.items() if v is not None}
    return config


def expected_shapes(config: Mapping[str, Any], *, packed: bool) -> dict[str, tuple[int, ...]]:
    """Every tensor of a trainer checkpoint of this config, without the decoder (its tie and bias vary)."""
    h, v, layers = int(config["hidden_size"]), int(config["vocab_size"]), int(config["num_hidden_layers"])
    width = ffn_width(config)
    shapes: dict[str, tuple[int, ...]] = {"model.encoder.weight": (v, h)}
    if not config["rope"]:
        shapes["model.positional_embedding.weight"] = (int(config["max_position_embeddings"]) + 1, h)
    norms = ["model.layer_norm"]
    for i in range(layers):
        p = f"model.transformer_encoder.{i}"
        shapes[f"{p}.qkv.weight"] = (3 * h, h)
        shapes[f"{p}.wo.weight"] = (h, h)
        if config["hidden_act"] == "gelu":
            shapes[f"{p}.ffn.0.weight"] = (width, h)
            shapes[f"{p}.ffn.2.weight"] = (h, width)
        elif packed:
            shapes[f"{p}.ffn.w12.weight"] = (2 * width, h)
            shapes[f"{p}.ffn.w3.weight"] = (h, width)
        else:
            shapes[f"{p}.ffn.w1.weight"] = (width, h)
            shapes[f"{p}.ffn.w2.weight"] = (width, h)
            shapes[f"{p}.ffn.w3.weight"] = (h, width)
        norms += [f"{p}.attention_norm", f"{p}.ffn_norm"]
    for norm in norms:
        shapes[f"{norm}.weight"] = (h,)
        if not config["rms_norm"]:
            shapes[f"{norm}.bias"] = (h,)
    return shapes


def check_shapes(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: Path) -> None:
    """The checkpoint's tensors are exactly those config.yaml describes, with the shapes it implies."""
    packed = any(name.endswith(".ffn.w12.weight") for name in shapes)
    want = expected_shapes(config, packed=packed)
    h, v = int(config["hidden_size"]), int(config["vocab_size"])
    want["decoder.weight"] = (v, h)
    want["decoder.bias"] = (v,)
    for name, shape in want.items():
        got = shapes.get(name)
        if got is None and not name.startswith("decoder."):
            raise ConversionError("missing from the weights, which config.yaml's model: section implies", file=where,
                                  tensor=name)
        if got is not None and tuple(got) != shape:
            raise ConversionError(f"has shape {tuple(got)}, config.yaml's model: section implies {shape}", file=where,
                                  tensor=name)
    extra = [name for name in shapes if name not in want]
    if extra:
        raise ConversionError("is not part of the NeoBERT masked-LM model config.yaml describes", file=where,
                              tensor=extra[0])
