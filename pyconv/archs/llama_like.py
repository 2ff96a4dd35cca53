"""What most decoder families share with Llama: its module tree's HF names, the trainer's fused layout
of it, its signature and hyper-parameters. A family that follows Llama's tree is ``llama_like`` plus
what differs::

    OLMO2 = llama_like("olmo2", "Olmo2ForCausalLM", GgufLayout(gguf.MODEL_ARCH.OLMO2))
"""

from __future__ import annotations

import gguf

from .arch import Arch
from .gguf_layout import GgufLayout
from .hf_layout import HfLayout, HfName
from .hparams import COMMON_HPARAMS, HParam, head_dim
from .native_layout import NativeLayout, regroup
from .proof import UNPROVEN, Proof

T = gguf.MODEL_TENSOR
BLOCK = "model.layers.{bid}"
# HF names of the decoder families that follow Llama's module tree
LLAMA_HF_NAMES = {
    T.TOKEN_EMBD: HfName("model.embed_tokens"), T.OUTPUT_NORM: HfName("model.norm"), T.OUTPUT: HfName("lm_head"),
    T.ATTN_NORM: HfName(f"{BLOCK}.input_layernorm"), T.FFN_NORM: HfName(f"{BLOCK}.post_attention_layernorm"),
    T.ATTN_Q: HfName(f"{BLOCK}.self_attn.q_proj"), T.ATTN_K: HfName(f"{BLOCK}.self_attn.k_proj"),
    T.ATTN_V: HfName(f"{BLOCK}.self_attn.v_proj"), T.ATTN_OUT: HfName(f"{BLOCK}.self_attn.o_proj"),
    T.FFN_GATE: HfName(f"{BLOCK}.mlp.gate_proj"), T.FFN_UP: HfName(f"{BLOCK}.mlp.up_proj"),
    T.FFN_DOWN: HfName(f"{BLOCK}.mlp.down_proj"),
}
# The fused trainer layout: K and V as one projection, gate and up as one (gate rows first)
KV_FUSED = regroup((f"{BLOCK}.self_attn.k_proj", f"{BLOCK}.self_attn.v_proj"), (f"{BLOCK}.self_attn.kv_proj",),
                   fused_units=(("one", "one"),))
GATE_UP_FUSED = regroup((f"{BLOCK}.mlp.gate_proj", f"{BLOCK}.mlp.up_proj"), (f"{BLOCK}.mlp.gate_up_proj",),
                        fused_units=(("one", "one"),))
LLAMA_SIGNATURE = (r"^model\.layers\.\d+\.self_attn\.q_proj\.weight$", r"^model\.layers\.\d+\.mlp\.gate_proj\.weight$")
SKIP_ROTARY = (r"\.rotary_emb\.inv_freq$",)
LLAMA_HF = HfLayout(LLAMA_HF_NAMES, buffers=SKIP_ROTARY)
LLAMA_NATIVE = NativeLayout((KV_FUSED, GATE_UP_FUSED))

LLAMA_HPARAMS = (
    *COMMON_HPARAMS,
    HParam("add_vocab_size", ("vocab_size",)),
    HParam("add_rope_dimension_count", derive=head_dim),
)


def llama_like(name: str, hf_classes: str | tuple[str, ...], gguf_layout: GgufLayout, *, hf: HfLayout = LLAMA_HF,
               native: NativeLayout = LLAMA_NATIVE, signature: tuple[str, ...] = (),
               model_types: tuple[str, ...] | None = None, proof: Proof = UNPROVEN) -> Arch:
    """The table of a family with Llama's module tree: ``name`` is its config's model_type unless
    ``model_types`` says otherwise."""
    classes = (hf_classes,) if isinstance(hf_classes, str) else hf_classes
    return Arch(name, classes, model_types or (name,), gguf_layout, hf, native, signature, proof=proof)
