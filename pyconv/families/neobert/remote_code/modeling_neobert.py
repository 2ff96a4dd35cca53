"""NeoBERT for transformers 5.x, shipped by pyconv inside HF exports (load with ``trust_remote_code=True``).

The module tree keeps the trainer's parameter names (``model.encoder``, ``model.transformer_encoder.{i}.qkv``,
``decoder`` ...), so an export is the training state dict with only its layout fixes applied. Numbers must
equal the training model's on the same weights; the two layout facts that decide this are noted where used:
the fused QKV projection is grouped per head, and RoPE rotates adjacent channel pairs (``rotary.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

from .rotary import apply_rotary, rotary_tables

_ACTIVATIONS = ("swiglu", "gelu")


class NeoBERTConfig(PreTrainedConfig):
    """Shape and behaviour of a NeoBERT encoder.

    ``intermediate_size`` is the trainer's nominal FFN width I; SwiGLU layers use
    I' = 8 * ceil(int(2I/3) / 8) as the trainer does. ``flash_attention`` only records that the run trained
    with a fused attention kernel: this code always calls ``scaled_dot_product_attention``, which picks a
    fused kernel by itself where the hardware has one and runs everywhere else. The config holds no
    generation-named field (transformers 5 refuses to save a config with e.g. ``max_length``).
    """

    model_type = "neobert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        max_position_embeddings: int = 4096,
        norm_eps: float = 1e-6,
        pad_token_id: int = 0,
        rope: bool = True,
        rms_norm: bool = True,
        hidden_act: str = "swiglu",
        dropout: float = 0.0,
        flash_attention: bool = False,
        decoder_bias: bool = False,
        embedding_init_range: float = 0.02,
        decoder_init_range: float = 0.02,
        classifier_init_range: float = 0.02,
        classifier_dropout: float = 0.1,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        activation = str(hidden_act).lower()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"NeoBERTConfig: hidden_act {hidden_act!r} is not one of {', '.join(_ACTIVATIONS)}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"NeoBERTConfig: hidden_size {hidden_size} is not a multiple of "
                f"num_attention_heads {num_attention_heads}"
            )
        if rope and (hidden_size // num_attention_heads) % 2:
            raise ValueError("NeoBERTConfig: RoPE rotates channel pairs, so the head size must be even")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.norm_eps = norm_eps
        self.pad_token_id = pad_token_id
        self.rope = rope
        self.rms_norm = rms_norm
        self.hidden_act = activation
        self.dropout = dropout
        self.flash_attention = flash_attention
        self.decoder_bias = decoder_bias
        self.embedding_init_range = embedding_init_range
        self.decoder_init_range = decoder_init_range
        self.classifier_init_range = classifier_init_range
        self.classifier_dropout = classifier_dropout
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)


def swiglu_width(intermediate_size: int) -> int:
    """The trainer's SwiGLU hidden width: two thirds of I, rounded up to a multiple of 8."""
    return 8 * -(-int(2 * intermediate_size / 3) // 8)


class NeoBERTRMSNorm(nn.Module):
    """RMSNorm that normalises in float32 and scales in the input dtype, as the trainer's does."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return wide.to(x.dtype) * self.weight


def _norm(config: NeoBERTConfig) -> nn.Module:
    if config.rms_norm:
        return NeoBERTRMSNorm(config.hidden_size, config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class NeoBERTSwiGLU(nn.Module):
    """w3(silu(w1 x) * w2 x): w1 is the gate, w2 the up projection, w3 the down projection."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden_size, width, bias=False)
        self.w2 = nn.Linear(hidden_size, width, bias=False)
        self.w3 = nn.Linear(width, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class NeoBERTLayer(nn.Module):
    """Pre-norm encoder block: x + attention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: NeoBERTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.attention_norm = _norm(config)
        self.ffn_norm = _norm(config)
        self.ffn: nn.Module
        if config.hidden_act == "swiglu":
            self.ffn = NeoBERTSwiGLU(config.hidden_size, swiglu_width(config.intermediate_size))
        else:
            # a Sequential keeps the trainer's parameter names ffn.0 / ffn.2
            self.ffn = nn.Sequential(
                nn.Linear(config.hidden_size, config.intermediate_size, bias=False),
                nn.GELU(),
                nn.Linear(config.intermediate_size, config.hidden_size, bias=False),
            )
        self.resid_dropout = nn.Dropout(config.dropout)
        self.ffn_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, key_bias: torch.Tensor | None, rotary: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        batch, seq, width = x.shape
        # The fused projection's rows come in per-head groups [q_h; k_h; v_h], not as [Q; K; V] thirds.
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, seq, self.num_heads, 3, self.head_dim).unbind(3)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=key_bias,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.resid_dropout(self.wo(attended.transpose(1, 2).reshape(batch, seq, width)))
        return x + self.ffn_dropout(self.ffn(self.ffn_norm(x)))


class NeoBERTPreTrainedModel(PreTrainedModel):
    config_class = NeoBERTConfig
    base_model_prefix = "model"
    # lets transformers' default embedding accessors (resizing, adapters) find the trainer's name
    _input_embed_layer = "encoder"
    _no_split_modules = ["NeoBERTLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # the trainer's scheme: uniform weights in +-range, zero biases, unit norms
        config = self.config
        if isinstance(module, nn.Linear):
            init.uniform_(module.weight, -config.decoder_init_range, config.decoder_init_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -config.embedding_init_range, config.embedding_init_range)
        elif isinstance(module, (NeoBERTRMSNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                init.zeros_(bias)


def _key_bias(attention_mask: torch.Tensor | None, input_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """An additive [batch, 1, 1, seq] bias over keys, or None when every key is kept.

    Integer and bool masks mark kept tokens with 1/True (the tokenizer's convention); floating masks are
    additive biases (0 keeps, a large negative number or -inf drops), the trainer's convention. Dropped keys
    get the dtype's lowest value so that every spelling of one keep-pattern gives the same softmax.
    """
    if attention_mask is None:
        return None
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"NeoBERT: attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(input_ids.shape)}"
        )
    if attention_mask.is_floating_point():
        bias = attention_mask.to(dtype)
        if not bias.any():
            return None
    else:
        keep = attention_mask.bool()
        if keep.all():
            return None
        bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def _outputs(output: Any, return_dict: bool | None, config: PreTrainedConfig) -> Any:
    use_dict = return_dict if return_dict is not None else config.return_dict
    return output if use_dict else output.to_tuple()


class NeoBERT(NeoBERTPreTrainedModel):
    """The encoder: token embedding, positions (RoPE or a learned table), layers, final norm.

    Every forward accepts ``token_type_ids`` because BERT-style tokenizers (NeoBERT trains with one) return
    them and pipelines pass them on; NeoBERT has no segment embedding, so they are ignored.
    """

    def __init__(self, config: NeoBERTConfig) -> None:
        super().__init__(config)
        self.encoder = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if not config.rope:
            # real tokens take rows pad_token_id + 1, + 2, ... and padding row pad_token_id (the trainer's
            # numbering), so the table has one row more than there are positions
            self.positional_embedding = nn.Embedding(
                config.max_position_embeddings + 1, config.hidden_size, padding_idx=config.pad_token_id
            )
        self.transformer_encoder = nn.ModuleList(NeoBERTLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = _norm(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        config = self.config
        seq = input_ids.shape[1]
        if seq > config.max_position_embeddings:
            raise ValueError(f"NeoBERT: {seq} tokens exceed max_position_embeddings {config.max_position_embeddings}")
        x = self.encoder(input_ids)
        rotary = None
        if config.rope:
            rotary = rotary_tables(config.hidden_size // config.num_attention_heads, seq, input_ids.device)
        else:
            # the trainer numbers real tokens 1, 2, ... after pad_token_id and sends padding to pad_token_id
            real = input_ids.ne(config.pad_token_id).long()
            x = x + self.positional_embedding(real.cumsum(dim=1) * real + config.pad_token_id)
        key_bias = _key_bias(attention_mask, input_ids, x.dtype)
        for layer in self.transformer_encoder:
            x = layer(x, key_bias, rotary)
        return _outputs(BaseModelOutput(last_hidden_state=self.layer_norm(x)), return_dict, config)


class NeoBERTLMHead(NeoBERTPreTrainedModel):
    """NeoBERT with its masked-LM decoder (``model`` + ``decoder``, the trainer's layout)."""

    # transformers 5: {target: source}; applied only when config.tie_word_embeddings is true
    _tied_weights_keys = {"decoder.weight": "model.encoder.weight"}

    def __init__(self, config: NeoBERTConfig) -> None:
        super().__init__(config)
        self.model = NeoBERT(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        hidden = self.model(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        logits = self.decoder(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=-100)
        return _outputs(MaskedLMOutput(loss=loss, logits=logits), return_dict, self.config)


class NeoBERTForSequenceClassification(NeoBERTPreTrainedModel):
    """NeoBERT with the trainer's classification head: first token -> dense -> tanh -> classifier."""

    def __init__(self, config: NeoBERTConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = NeoBERT(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        if config.num_labels is None:
            raise ValueError("NeoBERTForSequenceClassification needs config.num_labels")
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if module is self.dense or module is self.classifier:
            init.normal_(module.weight, mean=0.0, std=self.config.classifier_init_range)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        hidden = self.model(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        pooled = torch.tanh(self.dense(self.dropout(hidden[:, 0])))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return _outputs(SequenceClassifierOutput(loss=loss, logits=logits), return_dict, self.config)
