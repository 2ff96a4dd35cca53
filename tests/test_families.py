"""Every family of the harness (tests/family_harness.py), proven the same way: llama.cpp's logits on pyconv's
GGUF at each out type the table claims equal transformers' on the tiny checkpoint it was made from; the GGUF
back as an HF folder loads cleanly with the source's logits (and the transformers GGUF loader's where it knows
the architecture); each layout fix switched off breaks the agreement."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import pyconv
from pyconv import registry
from pyconv.archs.gguf_layout import ExpertStack
from pyconv.archs.hparams import HParam
from pyconv.archs.llama_like import T
from pyconv.archs.moe_like import EXPERTS_STACK
from pyconv.families.ernie4_5_moe import ERNIE4_5_MOE

from .archs_fixtures import LLAMA_SHAPE
from .family_harness import (
    BROKEN,
    F32_TOL,
    Ablation,
    Bench,
    Case,
    assert_logits_agree,
    hf_logits,
    llama_logits,
    max_diff,
    without_hparams,
)

# small distinct ids: the families' config defaults name special tokens past the tiny vocabulary
IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
# four experts of which each token takes two
MOE = {**IDS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


def swapped_experts(name: str, stack: ExpertStack | None = EXPERTS_STACK) -> Ablation:
    """The per-expert gate and up projections stacked into each other's GGUF tensor."""
    assert stack is not None
    parts = {k: {T.FFN_GATE_EXP: T.FFN_UP_EXP, T.FFN_UP_EXP: T.FFN_GATE_EXP}.get(v, v) for k, v in stack.parts.items()}
    return Ablation(f"{name}-expert-stack", {"experts": dataclasses.replace(stack, parts=parts)})


CASES = {c.name: c for c in (
    Case("olmo2", "Olmo2Config", "Olmo2ForCausalLM", IDS, seed=31),
    Case("granite", "GraniteConfig", "GraniteForCausalLM",
         {**IDS, "embedding_multiplier": 6.0, "residual_multiplier": 0.5, "attention_multiplier": 0.1,
          "logits_scaling": 0.5}, seed=32,
         ablations=(Ablation("granite-qk-permutation", {"permute_qk": False}),
                    # the logit scale is a key llama.cpp requires
                    Ablation("granite-scales", hparams=without_hparams("add_embedding_scale", "add_residual_scale",
                                                                       "add_attention_scale")))),
    # four layers: the fourth has no rotary
    Case("smollm3", "SmolLM3Config", "SmolLM3ForCausalLM", {**IDS, "num_hidden_layers": 4}, seed=33,
         ablations=(Ablation("smollm3-qk-permutation", {"permute_qk": False}),)),
    # rotary on half of each head, in interleaved pairs: permuting as for Llama breaks it
    Case("glm4", "Glm4Config", "Glm4ForCausalLM", {**IDS, "head_dim": 16}, seed=34,
         ablations=(Ablation("glm4-partial-rotary", hparams=without_hparams("add_rope_dimension_count")),
                    Ablation("glm4-interleaved-rotary", {"permute_qk": True}))),
    Case("starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM", IDS, seed=35, gelu=True, loader=True),
    Case("stablelm", "StableLmConfig", "StableLmForCausalLM", {**IDS, "use_qkv_bias": True}, seed=36, loader=True,
         ablations=(Ablation("stablelm-partial-rotary", hparams=without_hparams("add_rope_dimension_count")),)),
    Case("stablelm", "StableLmConfig", "StableLmForCausalLM", {**IDS, "use_parallel_residual": True}, seed=37,
         variant="parallel", loader=True),
    Case("exaone4", "Exaone4Config", "Exaone4ForCausalLM",
         {**IDS, "sliding_window": None, "layer_types": ["full_attention"] * 2}, seed=38),
    Case("ernie4_5", "Ernie4_5Config", "Ernie4_5ForCausalLM", {**IDS, "head_dim": 16}, seed=39,
         ablations=(Ablation("ernie4_5-interleaved-rotary", {"permute_qk": True}),)),
    # a context of 8 scaled by 4 with YaRN: the test's 20 positions reach past it, where the temperature acts
    Case("mistral3", "Ministral3Config", "Ministral3ForCausalLM",
         {**IDS, "head_dim": 16, "max_position_embeddings": 32, "rope_parameters": {
             "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8,
             "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.5}},
         seed=40,
         ablations=(Ablation("mistral3-qk-permutation", {"permute_qk": False}),
                    Ablation("mistral3-yarn", hparams=without_hparams("add_rope_scaling_type")),
                    Ablation("mistral3-temperature", hparams=without_hparams("add_attn_temperature_scale")))),
    # a window shorter than the test's text, and a pattern other than the graph's default (every 4th layer full)
    Case("cohere2", "Cohere2Config", "Cohere2ForCausalLM",
         {**IDS, "head_dim": 16, "logit_scale": 0.5, "sliding_window": 4, "num_hidden_layers": 3,
          "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}, seed=41,
         ablations=(Ablation("cohere2-layer-pattern", hparams=without_hparams("add_sliding_window_pattern")),)),
    # a window shorter than the test's text, a full layer between sliding ones, two rope bases, the query scale
    # llama.cpp applies (1/√head_dim) and the per-head q/k norms (w + 1 like the others)
    Case("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
         {**IDS, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4, "num_hidden_layers": 3,
          "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
          "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}},
         seed=47, gelu=True, loader=True,
         # transformers' GGUF loader reads neither the layer pattern nor the local base nor the query scale
         loader_defaults={"query_pre_attn_scalar": 256, "layer_types": ["sliding_attention"] * 3,
                          "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                              "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
         ablations=(Ablation("gemma3-norm-shift", {"norm_shift": 0.0}),
                    Ablation("gemma3-layer-pattern", hparams=without_hparams("add_sliding_window_pattern")),
                    Ablation("gemma3-local-rope-base", hparams=without_hparams("add_rope_freq_base_swa")))),
    # the same text model inside the multimodal checkpoint, beside a vision tower GGUF leaves out
    Case("gemma3", "Gemma3Config", "Gemma3ForConditionalGeneration",
         {**IDS, "text_config": {**LLAMA_SHAPE, **IDS, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4},
          "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
          "mm_tokens_per_image": 4}, seed=48, gelu=True, variant="multimodal"),
    # convolution layers around an attention one, and an FFN width LFM2 rounds up (96 → 64 → 256)
    Case("lfm2", "Lfm2Config", "Lfm2ForCausalLM",
         {**IDS, "num_hidden_layers": 3, "layer_types": ["conv", "full_attention", "conv"]}, seed=49, loader=True,
         # without each fix llama.cpp finds tensors of other shapes than its graph's, or missing ones
         ablations=(Ablation("lfm2-conv-layers", hparams=lambda layout: {"hparams": (*(
             h for h in layout.hparams if h.method != "add_head_count_kv"),
             HParam("add_head_count_kv", ("num_key_value_heads",)))}, refused=True),
                    Ablation("lfm2-conv-kernels", {"squeezed": ()}, refused=True),
                    Ablation("lfm2-ffn-width", hparams=lambda layout: {"hparams": (*(
                        h for h in layout.hparams if h.method != "add_feed_forward_length"),
                        HParam("add_feed_forward_length", ("intermediate_size",)))}, refused=True))),
    Case("gptneox", "GPTNeoXConfig", "GPTNeoXForCausalLM", IDS, seed=42, gelu=True,
         ablations=(Ablation("gptneox-qkv-per-head", {"head_grouped": ()}),
                    Ablation("gptneox-partial-rotary", hparams=without_hparams("add_rope_dimension_count")))),
    Case("gptneox", "GPTNeoXConfig", "GPTNeoXForCausalLM", {**IDS, "use_parallel_residual": False}, seed=43,
         gelu=True, variant="sequential"),
    # Falcon 7B's layout: multi-query (the config's num_kv_heads says 4, the model has one), one norm
    Case("falcon", "FalconConfig", "FalconForCausalLM", {**IDS, "num_kv_heads": 4}, seed=44, gelu=True, loader=True),
    # 40B/180B's layout: two key-value groups of two query heads, a norm for each branch (whose GGUF names
    # stand for other HF names than 7B's, so this one does not go back to HF)
    Case("falcon", "FalconConfig", "FalconForCausalLM",
         {**IDS, "new_decoder_architecture": True, "num_kv_heads": 2}, seed=45, gelu=True, variant="grouped", back=False,
         ablations=(Ablation("falcon-grouped-qkv", {"kv_grouped": ()}),)),
    # neither: every head its own query, key and value
    Case("falcon", "FalconConfig", "FalconForCausalLM", {**IDS, "multi_query": False}, seed=46, gelu=True,
         variant="per-head", ablations=(Ablation("falcon-per-head-qkv", {"kv_grouped": ()}),)),
    Case("qwen2_moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", {**MOE, "shared_expert_intermediate_size": 48},
         seed=47, ablations=(swapped_experts("qwen2_moe"),)),
    Case("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", {**MOE, "head_dim": 16, "norm_topk_prob": True},
         seed=48, ablations=(swapped_experts("qwen3_moe"),)),
    # olmoe's graph norms k over n_embd: as many key-value heads as query heads
    Case("olmoe", "OlmoeConfig", "OlmoeForCausalLM", {**MOE, "intermediate_size": 32, "num_key_value_heads": 4},
         seed=50, ablations=(swapped_experts("olmoe"),)),
    # a dense first layer, then experts: two routed of four, and two shared
    Case("ernie4_5_moe", "Ernie4_5_MoeConfig", "Ernie4_5_MoeForCausalLM",
         {**IDS, "head_dim": 16, "moe_num_experts": 4, "moe_k": 2, "moe_intermediate_size": 32,
          "moe_num_shared_experts": 2, "moe_layer_start_index": 1}, seed=54,
         ablations=(swapped_experts("ernie4_5_moe", ERNIE4_5_MOE.gguf.experts),)),
    # a dense first layer, then two routed experts of four and one shared
    Case("glm4_moe", "Glm4MoeConfig", "Glm4MoeForCausalLM",
         {**IDS, "head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
          "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 2.0}, seed=55,
         ablations=(Ablation("glm4_moe-partial-rotary", hparams=without_hparams("add_rope_dimension_count")),)),
    Case("granitemoe", "GraniteMoeConfig", "GraniteMoeForCausalLM",
         {**IDS, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32,
          "embedding_multiplier": 6.0, "residual_multiplier": 0.5, "attention_multiplier": 0.1, "logits_scaling": 0.5},
         seed=52, ablations=(Ablation("granitemoe-qk-permutation", {"permute_qk": False}),)),
)}


LOGIT_CASES = [(name, t) for name, case in CASES.items() for t in case.arch.proof.outtypes]
BACK_CASES = [name for name, case in CASES.items() if case.arch.proof.to_hf and case.back]
ABLATIONS = [(name, a) for name, case in CASES.items() for a in case.ablations]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Bench:
    return Bench(tmp_path_factory.mktemp("families"), smollm2_hf, CASES)


def test_every_case_proves_its_table() -> None:
    """The harness runs what each table claims, and every table it claims for has a case."""
    for name, case in CASES.items():
        assert case.arch.proof.outtypes and "tests/test_families.py" in case.arch.proof.tests, name
    claimed = {n for n, a in registry.catalog().tables.items() if "tests/test_families.py" in a.proof.tests}
    assert claimed == {case.table for case in CASES.values()}


@pytest.mark.parametrize(("name", "outtype"), LOGIT_CASES, ids=[f"{n}-{t}" for n, t in LOGIT_CASES])
def test_llama_cpp_logits_equal_transformers(bench: Bench, name: str, outtype: str) -> None:
    want = bench.hf_logits(name)
    assert np.abs(want).max() > 1.0  # logits big enough for the tolerances to mean something
    got = llama_logits(bench.gguf(name, outtype), bench.ids(name))
    assert_logits_agree(got, want, outtype, CASES[name].gelu)


@pytest.mark.parametrize("name", BACK_CASES)
def test_gguf_back_to_hf_loads_cleanly_with_the_same_logits(bench: Bench, tmp_path: Path, name: str) -> None:
    from transformers import AutoModelForCausalLM

    src, path = bench.folder(name), bench.gguf(name)
    out = tmp_path / "hf"
    # the tokenizer from the source folder: rebuilding SmolLM2's from the GGUF is slow and tested elsewhere
    pyconv.convert(path, out, to="hf", tokenizer=str(src), progress=False)
    with_info: Any = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager",
                                                          output_loading_info=True)
    model, info = with_info
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.model_type == CASES[name].arch.model_types[0]
    ids = bench.ids(name)
    with torch.no_grad():
        ours = model.eval()(torch.tensor([ids])).logits[0].numpy()
    assert max_diff(ours, bench.hf_logits(name)) < F32_TOL
    if CASES[name].loader:
        theirs: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                           attn_implementation="eager")
        with torch.no_grad():
            loaded = theirs.eval()(torch.tensor([ids])).logits[0].numpy()
        defaults = CASES[name].loader_defaults
        want = hf_logits(src, ids, **defaults) if defaults else ours
        assert max_diff(loaded, want) < F32_TOL


@pytest.mark.parametrize(("name", "ablation"), ABLATIONS, ids=[a.id for _n, a in ABLATIONS])
def test_a_missing_layout_fix_breaks_parity(bench: Bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             name: str, ablation: Ablation) -> None:
    tables, table = registry.catalog().tables, CASES[name].table
    monkeypatch.setitem(tables, table, ablation.apply(tables[table]))
    out = tmp_path / f"{name}.gguf"
    pyconv.convert(bench.folder(name), out, outtype="f32", progress=False, fingerprint=False)
    if ablation.refused:
        with pytest.raises(ValueError, match="Failed to load model"):
            llama_logits(out, bench.ids(name))
        return
    assert max_diff(llama_logits(out, bench.ids(name)), bench.hf_logits(name)) > BROKEN


@pytest.mark.parametrize(("name", "changes", "field"), [
    ("smollm3", {"no_rope_layer_interval": 3}, "no_rope_layer_interval"),
    ("falcon", {"alibi": True}, "alibi"),
], ids=["smollm3-nope-interval", "falcon-alibi"])
def test_settings_the_graph_cannot_compute_are_refused(bench: Bench, tmp_path: Path, name: str,
                                                       changes: dict[str, object], field: str) -> None:
    import json
    import shutil

    folder = tmp_path / name
    shutil.copytree(bench.folder(name), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(pyconv.ConversionError, match=f"graph cannot compute this model: {field} is") as e:
        pyconv.convert(folder, tmp_path / "out.gguf", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "out.gguf").exists()
