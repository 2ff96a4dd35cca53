"""The proof every family gets, shared: a tiny random model that transformers' own classes build and save,
converted to GGUF by pyconv at the out types the family's table claims (``Arch.proof``), run by llama.cpp on
the same token ids, and compared with transformers' logits; the GGUF converted back (``--to hf``) and loaded
by transformers with no missing or unexpected keys, giving the source's logits and, where transformers' own
GGUF loader knows the architecture, the loader's; and each layout fix of the table switched off, which must
break the agreement. A family is one ``Case``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyconv
from pyconv import registry
from pyconv.archs import Arch, GgufLayout

from .archs_fixtures import (
    LLAMA_SHAPE,
    SAMPLE_TEXTS,
    copy_smollm2_tokenizer,
    save_model,
)

TEXT = " ".join(SAMPLE_TEXTS[:2])
N_TOKENS = 20

# llama.cpp with an f32 KV cache (its default f16 cache alone costs ~3e-3) runs SiLU families in the same
# float32 math as torch, up to summation order. ggml evaluates GELU through an f16 lookup table
# (ggml-cpu/vec.h, GGML_GELU_FP16), and for BERT with the tanh approximation where HF uses erf; both stay
# near 1e-3. f16 weights make ggml round activations to f16 for the matmuls too.
F32_TOL = 1e-4
GELU_TOL = 5e-3
F16_TOL = 2e-2
# Q8_0 moves these random models' logits (spread ~1) by up to ~0.2; a layout mistake by several
Q8_TOL = 0.3
# the share of positions whose top token must agree: a random model's top two logits among 49152 are often
# closer than rounding moves them, so rounded weights may swap some, f32 may not
TOP_TOKENS = {"f32": 1.0, "f16": 0.9, "bf16": 0.9}
QUANT_TOP_TOKENS = 0.8
# a fix left out moves logits by far more than any tolerance above (logits here reach ~4)
BROKEN = 0.1


def tolerance(outtype: str, gelu: bool) -> float:
    """The largest |Δ| allowed between llama.cpp's and transformers' logits."""
    if outtype == "f32":
        return GELU_TOL if gelu else F32_TOL
    return F16_TOL if outtype in ("f16", "bf16") else Q8_TOL


def without_hparams(*methods: str) -> Callable[[GgufLayout], dict[str, Any]]:
    """An ablation's change: the table's hyper-parameters without those written by these GGUFWriter methods."""
    return lambda layout: {"hparams": tuple(h for h in layout.hparams if h.method not in methods)}


@dataclass(frozen=True)
class Ablation:
    """One layout fix of the table switched off: ``gguf`` fields replaced by these values, or by what ``hparams``
    (a function of the GGUF layout) gives. ``refused``: without the fix llama.cpp does not load the file at all
    (tensor shapes that disagree with the graph's), rather than computing other logits."""

    id: str
    gguf: Mapping[str, Any] = field(default_factory=dict)
    hparams: Callable[[GgufLayout], dict[str, Any]] | None = None
    refused: bool = False

    def apply(self, arch: Arch) -> Arch:
        changes = {**self.gguf, **(self.hparams(arch.gguf) if self.hparams else {})}
        return dataclasses.replace(arch, gguf=dataclasses.replace(arch.gguf, **changes))


@dataclass(frozen=True)
class Case:
    """One family's tiny model: transformers' config and model classes (by name) and the config fields it
    sets beyond the shared tiny shape."""

    table: str
    config: str
    model: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    variant: str = ""               # a second case of the same table
    back: bool = True               # goes back to HF when the table's proof says its GGUF does
    gelu: bool = False              # its FFN applies GELU (looser f32 tolerance)
    loader: bool = False            # transformers' GGUF loader knows its architecture
    # config fields transformers' GGUF loader does not read back: it takes these defaults instead
    loader_defaults: Mapping[str, Any] = field(default_factory=dict)
    ablations: tuple[Ablation, ...] = ()

    def build(self, out: Path, smollm2: Path) -> None:
        import transformers

        cfg = getattr(transformers, self.config)(**{**LLAMA_SHAPE, **self.fields})
        save_model(getattr(transformers, self.model), cfg, out, self.seed)
        copy_smollm2_tokenizer(smollm2, out)

    @property
    def name(self) -> str:
        return f"{self.table}-{self.variant}" if self.variant else self.table

    @property
    def arch(self) -> Arch:
        return registry.catalog().tables[self.table]


def token_ids(folder: Path) -> list[int]:
    if (folder / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        return [int(sp.bos_id()), *(int(i) for i in sp.encode(TEXT))][:N_TOKENS]
    from tokenizers import Tokenizer

    return list(Tokenizer.from_file(str(folder / "tokenizer.json")).encode(TEXT).ids[:N_TOKENS])


def hf_logits(folder: Path, ids: list[int], **config: Any) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **config)
    with torch.no_grad():
        logits: np.ndarray = model(torch.tensor([ids])).logits[0].numpy()
    return logits


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import GGML_TYPE_F32, Llama

    llm = Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                verbose=True)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def assert_logits_agree(got: np.ndarray, want: np.ndarray, outtype: str, gelu: bool) -> None:
    assert max_diff(got, want) < tolerance(outtype, gelu), (outtype, max_diff(got, want))
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    assert agree >= TOP_TOKENS.get(outtype, QUANT_TOP_TOKENS), (outtype, agree)


class Bench:
    """Each case's checkpoint, GGUF files, token ids and transformers' logits, made once per test module."""

    def __init__(self, root: Path, smollm2: Path, cases: Mapping[str, Case]) -> None:
        self.root, self.smollm2, self.cases = root, smollm2, cases
        self.folders: dict[str, Path] = {}
        self.ggufs: dict[tuple[str, str], Path] = {}
        self.logits: dict[str, np.ndarray] = {}

    def folder(self, name: str) -> Path:
        if name not in self.folders:
            folder = self.root / f"tiny-{name}"
            folder.mkdir()
            self.cases[name].build(folder, self.smollm2)
            self.folders[name] = folder
        return self.folders[name]

    def gguf(self, name: str, outtype: str = "f32") -> Path:
        if (name, outtype) not in self.ggufs:
            out = self.root / f"{name}-{outtype}.gguf"
            pyconv.convert(self.folder(name), out, outtype=outtype, progress=False, fingerprint=False)
            self.ggufs[name, outtype] = out
        return self.ggufs[name, outtype]

    def ids(self, name: str) -> list[int]:
        return token_ids(self.folder(name))

    def hf_logits(self, name: str) -> np.ndarray:
        if name not in self.logits:
            self.logits[name] = hf_logits(self.folder(name), self.ids(name))
        return self.logits[name]

