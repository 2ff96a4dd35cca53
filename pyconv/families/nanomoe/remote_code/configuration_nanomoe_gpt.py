"""Configuration of nanoMoE's GPT, shipped by pyconv inside HF exports (load with ``trust_remote_code=True``)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

_AUTO_MAP = {
    "AutoConfig": "configuration_nanomoe_gpt.GPTConfig",
    "AutoModelForCausalLM": "modeling_nanomoe_gpt.GPT",
}


class GPTConfig(PreTrainedConfig):
    """nanoMoE's model arguments under the trainer's names.

    ``n_exp == 1`` is a dense GPT. Otherwise layer i uses experts when i >= ``moe_start_layer`` and
    (i + 1) is a multiple of ``stride``. The router's top-k is ``moe_top_k``: a field named ``top_k`` would
    be taken for a generation setting, which transformers 5 drops on load and refuses to save. Training-only
    switches of the trainer that this code does not compute (orthogonality and gate-output regularisers,
    init schemes) are kept as plain attributes when present, so a re-saved config still records the run.
    """

    model_type = "nanomoe_gpt"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "sequence_len",
    }

    def __init__(
        self,
        sequence_len: int = 1024,
        vocab_size: int = 50304,
        n_layer: int = 10,
        n_head: int = 12,
        n_embd: int = 768,
        n_exp: int = 32,
        moe_top_k: int = 2,
        stride: int = 1,
        moe_start_layer: int = 2,
        train_capacity: float = 1.25,
        eval_capacity: float = 3.0,
        min_capacity: int = 4,
        use_noisy_top_k: bool = False,
        use_qwen3_moe_mlp: bool = True,
        use_aux_loss: bool = True,
        aux_loss_weight: float = 0.01,
        use_router_z_loss: bool = True,
        router_z_loss_weight: float = 0.00001,
        use_logits_demeaned_z_loss: bool = True,
        penalize_pos_mean_logits: bool = True,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        if n_embd % n_head:
            raise ValueError(f"GPTConfig: n_embd {n_embd} is not a multiple of n_head {n_head}")
        if n_exp > 1 and not 1 <= moe_top_k <= n_exp:
            raise ValueError(f"GPTConfig: moe_top_k {moe_top_k} must lie in 1..n_exp ({n_exp})")
        # the folder must stay loadable however the config was built, so the entry points default in
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        self.sequence_len = sequence_len
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.n_exp = n_exp
        self.moe_top_k = moe_top_k
        self.stride = stride
        self.moe_start_layer = moe_start_layer
        self.train_capacity = train_capacity
        self.eval_capacity = eval_capacity
        self.min_capacity = min_capacity
        self.use_noisy_top_k = use_noisy_top_k
        self.use_qwen3_moe_mlp = use_qwen3_moe_mlp
        self.use_aux_loss = use_aux_loss
        self.aux_loss_weight = aux_loss_weight
        self.use_router_z_loss = use_router_z_loss
        self.router_z_loss_weight = router_z_loss_weight
        self.use_logits_demeaned_z_loss = use_logits_demeaned_z_loss
        self.penalize_pos_mean_logits = penalize_pos_mean_logits
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)

    def is_moe_layer(self, index: int) -> bool:
        return self.n_exp > 1 and index >= self.moe_start_layer and (index + 1) % self.stride == 0
