"""Tiny random checkpoints of every family pyconv turns into GGUF, saved by transformers itself, with
tokenizers built by the libraries that define them (no downloads)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# text the tokenizer trainers learn from and the tests tokenize; varied enough for a few hundred pieces
CORPUS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.",
    "A journey of a thousand miles begins with a single step, said the old traveller.",
    "Numbers such as 3, 42, 1000 and 3.14159 appear in scientific papers and recipes alike.",
    "She sells sea shells by the sea shore; the shells she sells are surely sea shells.",
    "def add(a, b):\n    return a + b  # adds two numbers\n",
    "Machine learning models convert text into tokens before they compute anything useful.",
    "Paris is the capital of France, Berlin of Germany, and Madrid of Spain.",
    "Rain, wind and snow: the weather in the mountains changes quickly in the spring.",
    "Transformers use attention to mix information between the positions of a sequence.",
    "Open the window, water the plants, and remember to feed the goldfish before noon!",
    "Every morning the baker wakes at four to prepare bread, croissants and sweet rolls.",
    "Quantum computers promise speedups for some problems but remain hard to build.",
]

SAMPLE_TEXTS = [
    "The capital of France is Paris.",
    "numbers 3 42 1000 and 3.14159, said the baker!",
    "Unseen words like zyzzyva and quokka, mixed CASE too.",
]


def perturb_vectors(model: torch.nn.Module, seed: int) -> None:
    """Random offsets on every 1-d parameter: freshly initialised norms are all ones (Gemma: zeros) and
    biases zeros, which would hide a missing norm shift or a dropped bias."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)


def save_model(cls: Any, config: Any, out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = cls(config).eval()
    perturb_vectors(model, seed)
    model.save_pretrained(out)


def copy_smollm2_tokenizer(smollm2: Path, out: Path) -> None:
    """SmolLM2's byte-level BPE tokenizer (vocab 49152), as a tiny model's tokenizer."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2 / name, out / name)


def train_sentencepiece(out: Path, *, gemma: bool, vocab_size: int = 400) -> int:
    """A SentencePiece model trained by sentencepiece itself, with byte fallback and whitespace kept.
    Gemma style: pad 0, eos 1, bos 2, unk 3, no dummy space prefix. Otherwise Llama 2 / Phi-3 style:
    unk 0, bos 1, eos 2, a dummy prefix, and Phi-3's <|endoftext|> (llama.cpp looks these up by text
    in a model named phi3). Returns the number of pieces."""
    import sentencepiece as spm

    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        pad_id=0 if gemma else -1, eos_id=1 if gemma else 2, bos_id=2 if gemma else 1, unk_id=3 if gemma else 0,
        byte_fallback=True, add_dummy_prefix=not gemma, remove_extra_whitespaces=False,
        normalization_rule_name="identity", user_defined_symbols=[] if gemma else ["<|endoftext|>"],
        num_threads=1, minloglevel=2, hard_vocab_limit=False)
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    return int(spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).vocab_size())


def train_wordpiece(out: Path, vocab_size: int = 300) -> None:
    """An uncased BERT WordPiece tokenizer trained by ``tokenizers``, saved the way transformers saves one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                      pad_token="[PAD]", mask_token="[MASK]")
    wrapped.save_pretrained(out)


def add_mean_pooling(out: Path) -> None:
    """The sentence-transformers files that say how embeddings are pooled."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False}))


def rewrite_safetensors(folder: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    save_file(edit(load_file(path)), path, metadata={"format": "pt"})


@dataclass(frozen=True)
class Family:
    """How to build one tiny checkpoint and what the references can check of it."""

    name: str                    # pyconv table
    build: Callable[[Path, Path], None]   # (output folder, SmolLM2 folder)
    hf_gguf_loader: bool         # transformers' GGUF loader supports the architecture
    outtypes: tuple[str, ...] = ("f32",)
    # config fields transformers' GGUF loader does not read back: it takes these defaults instead
    loader_defaults: Mapping[str, Any] = field(default_factory=dict)


LLAMA_SHAPE: dict[str, Any] = {
    "vocab_size": 49152, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 128, "initializer_range": 0.1}


def _causal(config_cls: str, model_cls: str, seed: int, **fields: Any) -> Callable[[Path, Path], None]:
    def build(out: Path, smollm2: Path) -> None:
        import transformers

        cfg = getattr(transformers, config_cls)(**{**LLAMA_SHAPE, **fields})
        save_model(getattr(transformers, model_cls), cfg, out, seed)
        copy_smollm2_tokenizer(smollm2, out)
    return build


def build_gemma(out: Path, _smollm2: Path) -> None:
    from transformers import GemmaConfig, GemmaForCausalLM

    cfg = GemmaConfig(**{**LLAMA_SHAPE, "vocab_size": train_sentencepiece(out, gemma=True), "head_dim": 16})
    save_model(GemmaForCausalLM, cfg, out, seed=5)


def build_gemma2(out: Path, _smollm2: Path) -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    vocab_size = train_sentencepiece(out, gemma=True)
    # head_dim = query_pre_attn_scalar = 256 as in Gemma 2 2B/9B: llama.cpp scales queries by
    # 1/sqrt(head_dim) and transformers' GGUF loader keeps the config's default scalar (256); a
    # sliding window shorter than the test sequence so the alternating local layers matter
    cfg = Gemma2Config(**{**LLAMA_SHAPE, "vocab_size": vocab_size, "num_attention_heads": 2, "num_key_value_heads": 1,
                          "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4,
                          "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0})
    save_model(Gemma2ForCausalLM, cfg, out, seed=6)


def build_phi3(out: Path, _smollm2: Path) -> None:
    import sentencepiece as spm
    from transformers import Phi3Config, Phi3ForCausalLM

    vocab_size = train_sentencepiece(out, gemma=False)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    cfg = Phi3Config(**{**LLAMA_SHAPE, "vocab_size": vocab_size, "original_max_position_embeddings": 128,
                        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": sp.piece_to_id("<|endoftext|>")})
    save_model(Phi3ForCausalLM, cfg, out, seed=7)


def build_gpt2(out: Path, smollm2: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    # n_positions 1024 (GPT-2's own): transformers' GGUF loader maps context_length to n_ctx, so its
    # position table keeps the default size
    cfg = GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=4, n_positions=1024, initializer_range=0.1,
                     bos_token_id=1, eos_token_id=2)
    save_model(GPT2LMHeadModel, cfg, out, seed=8)
    copy_smollm2_tokenizer(smollm2, out)


def bert_config() -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                      max_position_embeddings=64, initializer_range=0.1)


def build_bert(out: Path, _smollm2: Path) -> None:
    """BertModel (pooler included) with a sentence-transformers mean-pooling module."""
    from transformers import BertModel

    train_wordpiece(out)
    save_model(BertModel, bert_config(), out, seed=9)
    add_mean_pooling(out)


def build_bert_mlm(out: Path, _smollm2: Path) -> None:
    """BertForMaskedLM: the encoder under ``bert.``, the MLM head under ``cls.``."""
    from transformers import BertForMaskedLM

    train_wordpiece(out)
    save_model(BertForMaskedLM, bert_config(), out, seed=10)


FAMILIES = {f.name: f for f in (
    Family("llama", _causal("LlamaConfig", "LlamaForCausalLM", 1, tie_word_embeddings=False), True, ("f32", "f16")),
    Family("mistral", _causal("MistralConfig", "MistralForCausalLM", 2), True),
    Family("mixtral", _causal("MixtralConfig", "MixtralForCausalLM", 3, num_local_experts=4, num_experts_per_tok=2),
           False, ("f32", "f16")),
    Family("qwen2", _causal("Qwen2Config", "Qwen2ForCausalLM", 4, tie_word_embeddings=True), True, ("f32", "f16")),
    # head_dim 128 is Qwen3's default, which transformers' GGUF loader assumes (it does not read key_length)
    Family("qwen3", _causal("Qwen3Config", "Qwen3ForCausalLM", 11, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=128), True),
    Family("gemma", build_gemma, False, ("f32", "f16")),
    Family("gemma2", build_gemma2, True, loader_defaults={"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}),
    Family("phi3", build_phi3, True, ("f32", "f16")),
    Family("gpt2", build_gpt2, True, ("f32", "f16")),
)}
