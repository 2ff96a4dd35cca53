"""nanoMoE's GPT (askerlee/nanoMoE): learned positions, RMSNorm, weightless QK-norm, ReLU² dense MLPs and
top-k routed experts stored as raw [experts, in, out] parameters, the head tied to the token embedding.
Its training script saves ``ckpt.pt`` files (``{"model": state_dict, "model_args": {...}, ...}``, names
with torch.compile's ``_orig_mod.``) or, later, ``save_pretrained`` folders; this module turns either's
model arguments into the ``config.json`` of our modeling code (``remote_code/``) and says which tensors,
of which shapes, that model has. Facts: docs/custom-models.md, "nanoMoE".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import ConversionError

MODEL_TYPE = "nanomoe_gpt"
ARCHITECTURE = "GPT"
AUTO_MAP = {"AutoConfig": "configuration_nanomoe_gpt.GPTConfig", "AutoModelForCausalLM": "modeling_nanomoe_gpt.GPT"}
RUNTIME_PREFIXES = ("_orig_mod.", "module.")
# config field ← the model_args spellings revisions used (block_size and top_k were renamed; top_k would be
# taken for a generation setting by transformers 5)
RENAMED: dict[str, tuple[str, ...]] = {"sequence_len": ("sequence_len", "block_size"), "moe_top_k": ("moe_top_k", "top_k")}
# arguments that only the training loop reads, or that our config class spells otherwise
DROPPED = ("block_size", "top_k", "bias", "dropout", "auto_map", "architectures", "model_type", "transformers_version",
           "_name_or_path", "torch_dtype", "dtype")


def _first(args: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((args[n] for n in names if args.get(n) is not None), None)


def is_moe_layer(config: Mapping[str, Any], index: int) -> bool:
    return (int(config["n_exp"]) > 1 and index >= int(config["moe_start_layer"])
            and (index + 1) % int(config["stride"]) == 0)


def hf_config(args: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: Path) -> dict[str, Any]:
    """config.json from the training run's model arguments; what the tensors show (their sizes, which layers
    have experts and of which kind) fills in what older arguments leave out."""
    if args.get("bias"):
        raise ConversionError("model_args has bias=True: that GPT has biases in every Linear and no RMSNorm-only "
                              "blocks, which nanoMoE's modeling code does not build", file=where)
    if "transformer.wte.weight" not in shapes:
        raise ConversionError("missing: every nanoMoE GPT has a token embedding", file=where,
                              tensor="transformer.wte.weight")
    vocab, embd = shapes["transformer.wte.weight"]
    layers = {int(n.split(".")[2]) for n in shapes if n.startswith("transformer.h.")}
    config: dict[str, Any] = {k: v for k, v in args.items() if k not in DROPPED and k not in RENAMED}
    config.update({field: _first(args, names) for field, names in RENAMED.items()})
    if config.get("n_head") is None:
        raise ConversionError("the model arguments have no n_head, which the weights cannot tell", file=where)
    defaults = {
        "vocab_size": vocab, "n_embd": embd, "n_layer": max(layers, default=-1) + 1,
        "sequence_len": shapes.get("transformer.wpe.weight", (None,))[0], "n_exp": 1, "stride": 1,
        "moe_start_layer": 0, "moe_top_k": 2,
        "use_qwen3_moe_mlp": any(n.endswith(".mlp.experts.gate_proj") for n in shapes),
        "use_noisy_top_k": any(n.endswith(".mlp.router.w_noise.weight") for n in shapes),
    }
    for key, value in defaults.items():
        if config.get(key) is None:
            config[key] = value
    config.update({"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE, "auto_map": dict(AUTO_MAP)})
    return config


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model, ``lm_head.weight`` included (a checkpoint may leave it to the tie)."""
    v, c, e = int(config["vocab_size"]), int(config["n_embd"]), int(config["n_exp"])
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (v, c),
                                          "transformer.wpe.weight": (int(config["sequence_len"]), c)}
    for i in range(int(config["n_layer"])):
        p = f"transformer.h.{i}"
        shapes.update({f"{p}.ln_1.weight": (c,), f"{p}.ln_2.weight": (c,), f"{p}.attn.c_attn.weight": (3 * c, c),
                       f"{p}.attn.c_proj.weight": (c, c)})
        if is_moe_layer(config, i):
            shapes[f"{p}.mlp.router.w_g.weight"] = (e, c)
            if config["use_noisy_top_k"]:
                shapes[f"{p}.mlp.router.w_noise.weight"] = (e, c)
            if config["use_qwen3_moe_mlp"]:
                shapes[f"{p}.mlp.experts.gate_proj"] = (e, c, 4 * c)
            shapes[f"{p}.mlp.experts.c_fc"] = (e, c, 4 * c)
            shapes[f"{p}.mlp.experts.c_proj"] = (e, 4 * c, c)
        else:
            shapes[f"{p}.mlp.c_fc.weight"] = (4 * c, c)
            shapes[f"{p}.mlp.c_proj.weight"] = (c, 4 * c)
    shapes["transformer.ln_f.weight"] = (c,)
    shapes["lm_head.weight"] = (v, c)
    return shapes


def check_shapes(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: Path) -> None:
    """The checkpoint holds exactly the model the arguments describe (the head may be left to the tie)."""
    want = expected_shapes(config)
    for name, shape in want.items():
        got = shapes.get(name)
        if got is None and name != "lm_head.weight":
            raise ConversionError("missing from the weights, which the model arguments imply", file=where, tensor=name)
        if got is not None and tuple(got) != shape:
            raise ConversionError(f"has shape {tuple(got)}, the model arguments imply {shape}", file=where, tensor=name)
    extra = [name for name in shapes if name not in want]
    if extra:
        raise ConversionError("is not part of the nanoMoE GPT the model arguments describe", file=where, tensor=extra[0])
