"""Running a GGUF in llama.cpp (llama-cpp-python) and a reference in transformers, for probes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

# The 200 most common English words: a continuation that uses several of them is language.
COMMON_WORDS = frozenset("""
the of and to a in is it you that he was for on are with as i his they be at one have this from or had by not word
but what some we can out other were all there when up use your how said an each she which do their time if will way
about many then them write would like so these her long make thing see him two has look more day could go come did
number sound no most people my over know water than call first who may down side been now find any new work part take
get place made live where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move right boy old too
same tell does set three want air well also play small end put home read hand port large spell add even land here must
big high such follow act why ask men change went light kind off need house picture try us again animal point mother
world near build self earth father head stand own page should country found answer school grow study still learn plant
cover food sun four between state keep eye never last let thought city tree cross farm hard start might story saw far
sea draw left late run while press close night real life few north open seem together next white children begin got
walk example ease paper group always music those both mark often letter until mile river car feet care second book
carry took science eat room friend began idea fish mountain stop once base hear horse cut sure watch color face wood
main enough plain girl usual young ready above ever red list though feel talk bird soon body dog family direct pose
leave song measure door product black short numeral class wind question happen complete ship area half rock order fire
south problem piece told knew pass since top whole king space heard best hour better true during hundred five remember
step early hold west ground interest reach fast verb sing listen six table travel less morning ten simple several vowel
toward war lay against pattern slow center love person money serve appear road map rain rule govern pull cold notice
voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct
able pound done beauty drive stood contain front teach week final gave green oh quick develop ocean warm free minute
strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel full force blue object
decide surface deep moon island foot system busy test record boat common gold possible plane stead dry wonder laugh
thousand ago ran check game shape equate hot miss brought heat snow tire bring yes distant fill east paint language
among paris capital france city answer
""".split())


def load_llama(path: Path, n_ctx: int = 512, *, embedding: bool = False) -> Any:
    """The model for generating, or with ``embedding`` one that returns every token's embedding."""
    from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

    if embedding:
        return Llama(str(path), n_ctx=n_ctx, n_threads=2, verbose=False, seed=1, embedding=True,
                     pooling_type=LLAMA_POOLING_TYPE_NONE)
    return Llama(str(path), n_ctx=n_ctx, n_threads=2, verbose=False, seed=1, logits_all=True)


def greedy_text(model: Any, prompt: str, n: int) -> tuple[str, list[int]]:
    ids = model.tokenize(prompt.encode(), add_bos=True, special=True)
    out: list[int] = []
    for tok in model.generate(ids, temp=0.0, top_k=1, reset=True):
        if tok == model.token_eos() or len(out) == n:
            break
        out.append(tok)
    return model.detokenize(out).decode("utf-8", errors="replace"), out


def recognizable(text: str) -> tuple[bool, list[str]]:
    words = re.findall(r"[A-Za-z]+", text.lower())
    common = [w for w in words if w in COMMON_WORDS]
    return len(common) >= 2, common


def llama_logits(model: Any, ids: list[int]) -> np.ndarray:
    model.reset()
    model.eval(ids)
    return np.array(model.scores[: len(ids)], dtype=np.float32)


def hf_logits(folder: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        logits: np.ndarray = model(torch.tensor([ids])).logits[0].float().numpy()
    return logits


def hf_hidden_states(folder: Path, ids: list[int]) -> np.ndarray:
    """The last hidden states of the folder's base model (its own code when it ships one) for ``ids``."""
    import torch

    from .hf import load_model

    model, _info, _messages = load_model(folder, "AutoModel")
    with torch.no_grad():
        hidden: np.ndarray = model(input_ids=torch.tensor([ids])).last_hidden_state[0].float().numpy()
    return hidden
