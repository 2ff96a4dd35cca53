"""NeoBERT and llama.cpp's ``neo-bert`` architecture: why pyconv refuses ``--to gguf`` for NeoBERT.

llama.cpp's graph (src/models/neo-bert.cpp, through ``build_qkv``) views the fused ``attn_qkv`` output as
contiguous [Q; K; V] thirds, while NeoBERT's rows are grouped per head ([q_h; k_h; v_h] for each head h),
and llama.cpp's converter copies the rows as they are. The reproducer writes two tiny neo-bert files with
gguf-py (independently of pyconv) from the same trainer weights: rows as stored, and rows regrouped into
thirds, and runs them in llama.cpp. Stored rows give embeddings far from the training forward pass;
regrouped rows match it. If llama.cpp ever reads the projection per head, the first assertion fails and
the refusal should be revisited.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import pyconv

from .neobert_fixtures import Run, shape, write_step
from .reference.neobert import NeoBERTShape, hidden_states, trainer_state_dict

# I = 192: int(2I/3) = 128 is already a multiple of 8, so llama.cpp's converter's unrounded
# feed_forward_length and the trainer's I' agree and the file loads either way
SHAPE = shape(intermediate=192)
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
    sd = trainer_state_dict(SHAPE, seed=3)
    ids = [SPECIALS.index("[CLS]"), *torch.randint(5, SHAPE.vocab, (10,), generator=torch.Generator().manual_seed(0)).tolist(),
           SPECIALS.index("[SEP]")]
    want = hidden_states(sd, SHAPE, torch.tensor([ids]))[0].numpy()
    diffs = {}
    for regroup in (False, True):
        path = tmp_path / f"neobert-{regroup}.gguf"
        write_neobert_gguf(path, SHAPE, sd, regroup=regroup)
        got = llama_token_embeddings(path, ids)
        assert got.shape == want.shape
        diffs[regroup] = float(np.abs(got - want).max())
    assert np.abs(want).max() > 1.0
    assert diffs[False] > 1.0, diffs          # rows as stored (what llama.cpp's converter writes): wrong
    assert diffs[True] < 1e-4, diffs          # rows regrouped into thirds: llama.cpp's graph is otherwise right


def test_to_gguf_is_refused_with_the_reason(tmp_path: Path) -> None:
    step = write_step(tmp_path, Run("gguf", SHAPE, 1))
    with pytest.raises(pyconv.ConversionError, match=rf"^{step}: NeoBERT to GGUF is not supported: llama.cpp's neo-bert "
                                                     r"graph reads the fused attn_qkv as \[Q; K; V\] thirds"):
        pyconv.convert(step, tmp_path / "neobert.gguf", dry_run=True)
    assert not (tmp_path / "neobert.gguf").exists()
