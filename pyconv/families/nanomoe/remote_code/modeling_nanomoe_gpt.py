"""nanoMoE's GPT for transformers 5.x, shipped by pyconv inside HF exports (load with ``trust_remote_code=True``).

The module tree keeps the trainer's parameter names (``transformer.h.{i}.mlp.experts.c_fc`` ...), so an export
is the training state dict without its ``_orig_mod.`` prefixes. Experts are raw [experts, in, out] parameters
applied with ``bmm``: each is the transpose of a ``Linear.weight``. Importing this module also registers the
classes with ``AutoConfig`` and ``AutoModelForCausalLM``, so code that imports it can load folders without
``trust_remote_code``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

try:
    from .configuration_nanomoe_gpt import GPTConfig
    from .manager import MoELossTracker
except ImportError:
    # imported by file name from the export folder, the way the trainer's own scripts import it
    from configuration_nanomoe_gpt import GPTConfig  # type: ignore[no-redef]
    from manager import MoELossTracker  # type: ignore[no-redef]

_RMS_EPS = 1e-6
_INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        # c_attn's rows are contiguous [Q; K; V] blocks (unlike NeoBERT's per-head groups)
        q, k, v = (
            part.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2)
            for part in self.c_attn(x).split(width, dim=-1)
        )
        # weightless RMS norm over each head's channels with the dtype's epsilon (rms_norm's default)
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    """The dense feed-forward block: c_proj(relu(c_fc x)^2)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Router(nn.Module):
    """Top-k softmax gating over ``w_g`` logits, with a per-expert capacity and the training losses."""

    def __init__(self, config: GPTConfig, losses: MoELossTracker) -> None:
        super().__init__()
        self.n_exp = config.n_exp
        self.top_k = config.moe_top_k
        self.train_capacity = config.train_capacity
        self.eval_capacity = config.eval_capacity
        self.min_capacity = config.min_capacity
        self.use_aux_loss = config.use_aux_loss
        self.use_router_z_loss = config.use_router_z_loss
        self.demean_z_loss = config.use_logits_demeaned_z_loss
        self.penalize_mean_logit = config.penalize_pos_mean_logits
        self.losses = losses
        self.w_g = nn.Linear(config.n_embd, config.n_exp, bias=False)
        self.w_noise = nn.Linear(config.n_embd, config.n_exp, bias=False) if config.use_noisy_top_k else None

    def capacity(self, tokens: int) -> int:
        """Places per expert: floor(k * factor * tokens / experts), rounded up to even, at least min_capacity."""
        factor = self.train_capacity if self.training else self.eval_capacity
        places = math.floor(self.top_k * factor * tokens / self.n_exp)
        places += places % 2
        return max(places, self.min_capacity)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [tokens, n_embd] -> the chosen experts [tokens, k] and their gates (softmax over the k logits)."""
        logits = self.w_g(x)
        if self.training and self.w_noise is not None:
            logits = logits + F.softplus(self.w_noise(x)) * torch.randn_like(logits)
        top_logits, chosen = logits.topk(self.top_k, dim=-1)
        gates = top_logits.softmax(dim=-1)
        if self.training:
            self._record_losses(logits, chosen, gates)
        return chosen, gates

    def _record_losses(self, logits: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor) -> None:
        if self.use_aux_loss:
            # Switch Transformer balance loss: experts * sum(share of gate mass * share of assignments)
            gate_mass = torch.zeros_like(logits).scatter(-1, chosen, gates).float().mean(dim=0)
            assignments = F.one_hot(chosen, self.n_exp).sum(dim=1).float().mean(dim=0).detach()
            self.losses.add("aux_loss", self.n_exp * (gate_mass * assignments).sum())
        if self.use_router_z_loss:
            centred = logits - logits.mean(dim=-1, keepdim=True) if self.demean_z_loss else logits
            z = centred.logsumexp(dim=-1).square()
            if self.penalize_mean_logit:
                z = z + logits.mean(dim=-1).square()
            self.losses.add("router_z_loss", z.mean())


class MLPExperts(nn.Module):
    """All experts of a layer as [experts, in, out] parameters, applied to their token buffers with bmm.

    With ``use_qwen3_moe_mlp`` each expert is a SwiGLU, c_proj(silu(x gate_proj) * (x c_fc)); otherwise it is
    the dense block's c_proj(relu(x c_fc)^2).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        experts, width, inner = config.n_exp, config.n_embd, 4 * config.n_embd
        self.gate_proj: nn.Parameter | None
        if config.use_qwen3_moe_mlp:
            self.gate_proj = nn.Parameter(torch.empty(experts, width, inner))
        else:
            self.register_parameter("gate_proj", None)
        self.c_fc = nn.Parameter(torch.empty(experts, width, inner))
        self.c_proj = nn.Parameter(torch.empty(experts, inner, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = torch.bmm(x, self.c_fc)
        hidden = F.silu(torch.bmm(x, self.gate_proj)) * up if self.gate_proj is not None else F.relu(up).square()
        return torch.bmm(hidden, self.c_proj)


class MOELayer(nn.Module):
    def __init__(self, config: GPTConfig, losses: MoELossTracker) -> None:
        super().__init__()
        self.n_exp = config.n_exp
        self.router = Router(config, losses)
        self.experts = MLPExperts(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        flat = x.reshape(batch * seq, width)
        chosen, gates = self.router(flat)
        tokens, k = chosen.shape
        capacity = self.router.capacity(tokens)
        # Buffer places go out choice rank by choice rank: every token's first choice (tokens in batch-major
        # order) before any second choice. A choice that finds its expert full is dropped: the token loses that
        # expert's share, and the other gates are not renormalised.
        expert = chosen.t().reshape(-1)
        token = torch.arange(tokens, device=x.device).repeat(k)
        gate = gates.t().reshape(-1)
        one_hot = F.one_hot(expert, self.n_exp)
        place = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1
        kept = place < capacity
        expert, token, gate, place = expert[kept], token[kept], gate[kept], place[kept]
        buffers = flat.new_zeros(self.n_exp, capacity, width)
        buffers[expert, place] = flat[token]
        weighted = self.experts(buffers)[expert, place] * gate[:, None]
        return torch.zeros_like(flat).index_add_(0, token, weighted).view(batch, seq, width)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, use_moe: bool, losses: MoELossTracker) -> None:
        super().__init__()
        self.ln_1 = nn.RMSNorm(config.n_embd, eps=_RMS_EPS)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.RMSNorm(config.n_embd, eps=_RMS_EPS)
        self.mlp: nn.Module = MOELayer(config, losses) if use_moe else MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(PreTrainedModel, GenerationMixin):
    """Learned absolute positions, pre-norm blocks, a final RMSNorm and an LM head tied to ``wte``.

    ``forward`` returns a ``CausalLMOutputWithPast``, or with ``return_dict=False`` the trainer's tuple
    ``(logits, loss, losses)`` where ``losses`` holds the detached next-token, balance and router-z losses
    (None when not computed; the router losses exist only in training mode). ``labels`` follow the
    transformers convention: they are the input ids, shifted inside, with -100 ignored.
    """

    config_class = GPTConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    # transformers 5: {target: source}; applied only when config.tie_word_embeddings is true
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.moe_losses = MoELossTracker()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.sequence_len, config.n_embd),
                "h": nn.ModuleList(
                    Block(config, config.is_moe_layer(i), self.moe_losses) for i in range(config.n_layer)
                ),
                "ln_f": nn.RMSNorm(config.n_embd, eps=_RMS_EPS),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer["wte"]

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.transformer["wte"] = value

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=_INIT_STD)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, MLPExperts):
            # raw parameters: no Linear/Embedding module reaches them
            for param in module.parameters(recurse=False):
                init.normal_(param, mean=0.0, std=_INIT_STD)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor | None]]:
        config = self.config
        seq = input_ids.shape[1]
        if seq > config.sequence_len:
            raise ValueError(f"nanoMoE GPT: {seq} tokens exceed sequence_len {config.sequence_len}")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "nanoMoE GPT: padded batches are not supported: the model has no padding mask and the experts' "
                "capacity is shared by every token of a batch; pass unpadded sequences"
            )
        self.moe_losses.reset()
        x = self.transformer["wte"](input_ids) + self.transformer["wpe"](torch.arange(seq, device=input_ids.device))
        for block in cast(nn.ModuleList, self.transformer["h"]):
            x = block(x)
        logits = self.lm_head(self.transformer["ln_f"](x))
        router_losses = self.moe_losses.totals()
        self.moe_losses.reset()

        loss = None
        losses: dict[str, torch.Tensor | None] = {"ntp_loss": None, "aux_loss": None, "router_z_loss": None}
        for name, value in router_losses.items():
            losses[name] = value.detach()
        if labels is not None:
            next_token = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=-100
            )
            losses["ntp_loss"] = next_token.detach()
            loss = next_token
            if "aux_loss" in router_losses:
                loss = loss + config.aux_loss_weight * router_losses["aux_loss"]
            if "router_z_loss" in router_losses:
                loss = loss + config.router_z_loss_weight * router_losses["router_z_loss"]

        if not (return_dict if return_dict is not None else config.return_dict):
            return logits, loss, losses
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    # Narrower than GenerationMixin's on purpose: without a KV cache there is nothing else to prepare.
    def prepare_inputs_for_generation(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # No KV cache: every step runs the whole sequence, so generate()'s cache and slicing arguments are dropped.
        return {"input_ids": input_ids, "attention_mask": attention_mask}


AutoConfig.register(GPTConfig.model_type, GPTConfig, exist_ok=True)
AutoModelForCausalLM.register(GPTConfig, GPT, exist_ok=True)
# Registered classes load as local code, which transformers then does not copy on save_pretrained; marking them
# as custom classes makes a re-saved folder carry these files again.
GPTConfig.register_for_auto_class()
GPT.register_for_auto_class("AutoModelForCausalLM")
