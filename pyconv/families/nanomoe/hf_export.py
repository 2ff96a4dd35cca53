"""nanoMoE checkpoints (``ckpt.pt`` read by the restricted unpickler, or a folder its train.py saved) as
``GPT`` folders for our modeling code. Names stay the trainer's without ``_orig_mod.``; experts stay
[experts, in, out] as the code applies them; a head tied to ``wte`` is left to ``tie_word_embeddings``
(transformers 5's dict-form tie in the modeling code restores it on load).
"""

from __future__ import annotations

from typing import Any

from ...errors import ConversionError
from ...options import ConvertOptions
from ...plan import OutTensor, View
from ...sources.base import same_values
from ...sources.checkpoint import Checkpoint
from ...sources.torch_pickle import TorchCheckpoint
from ...targets.hf_model import HfTensors
from . import model as nanomoe

HEAD, EMBED = "lm_head.weight", "transformer.wte.weight"


def model_args(ck: Checkpoint) -> Any:
    """The model arguments train.py saves beside the state dict in a ckpt.pt, if ``ck`` is one."""
    return ck.saved_values.get("model_args") if isinstance(ck, TorchCheckpoint) else None


def recognises(ck: Checkpoint) -> bool:
    args = model_args(ck)
    return (isinstance(args, dict) and "n_exp" in args) or (ck.config or {}).get("model_type") == nanomoe.MODEL_TYPE


def nanomoe_tensors(ck: Checkpoint, opts: ConvertOptions) -> HfTensors:
    ck.strip_prefixes(nanomoe.RUNTIME_PREFIXES)
    args = model_args(ck)
    where = ck.path
    if not isinstance(args, dict):
        if ck.config is None:
            raise ConversionError("no model arguments (ckpt.pt's model_args or config.json)", file=where)
        args = ck.config
    shapes = {n: t.shape for n, t in ck.tensors.items()}
    config = nanomoe.hf_config(args, shapes, where)
    nanomoe.check_shapes(config, shapes, where)
    head, embed = ck.tensors.get(HEAD), ck.tensors[EMBED]
    tied = head is None or same_values(head, embed)
    if config.get("tie_word_embeddings") is False and head is not None:
        tied = False
    config["tie_word_embeddings"] = tied
    tensors = [OutTensor.from_view(n, View.of(t), t.dtype) for n, t in ck.tensors.items() if not (tied and n == HEAD)]
    notes = [f"nanoMoE {ck.format_name} checkpoint → {nanomoe.ARCHITECTURE} ({config['n_exp']} experts), head "
             + ("tied to the token embedding" if tied else "stored on its own")]
    return HfTensors(tensors, None, config, notes)


def nanomoe_usage(config: dict[str, Any], files: dict[str, bytes]) -> list[str]:
    tokenizer = "tokenizer.json" in files or "vocab.json" in files
    lines = ["## How to use it", "",
             "The folder carries its own modeling code (`configuration_nanomoe_gpt.py`, `modeling_nanomoe_gpt.py`, "
             "`manager.py`), so transformers loads it with `trust_remote_code=True`. Batches must be unpadded: the "
             "experts' capacity is shared by every token of a batch.", "", "```python", "import torch",
             "from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if tokenizer else ""), "",
             'folder = "path/to/this/folder"',
             "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)"]
    if tokenizer:
        lines += ["tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)",
                  'prompt = tokenizer("Once upon a time", return_tensors="pt").input_ids']
    else:
        lines += ["prompt = torch.tensor([[1, 2, 3, 4]])  # token ids of the run's tokenizer"]
    lines += ["out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)",
              "print(out[0].tolist())",
              "# the training script's tuple: logits, loss, and the separate losses (router ones in train mode)",
              "logits, loss, losses = model(out, labels=out, return_dict=False)",
              "print(float(loss), {k: None if v is None else float(v) for k, v in losses.items()})", "```", "",
              "Check it with `pyconv validate path/to/this/folder`.", ""]
    return lines
