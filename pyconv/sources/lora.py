"""PEFT LoRA adapters: a folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``, read by the restricted torch reader). The adapter holds, for each weight W of
its base model it adapts, a pair A [r, in] and B [out, r] such that the adapted weight is
W + (alpha / r) · B @ A. Only plain LoRA is read: whatever else PEFT can save beside the pairs (DoRA
magnitudes, per-module ranks or alphas, rsLoRA's scaling, modules trained whole, bias updates,
embedding adapters) is refused in one line, since dropping it would give another model.

The adapter's own tensors mean nothing without the base's config (architecture, heads), which comes
from ``--base`` or from ``base_model_name_or_path`` when that names a local folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import dtypes
from ..archs.catalog import Catalog
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import Plan
from ..targets.gguf_lora import plan_adapter_gguf
from ..targets.hf_model import HfTensors
from .base import LowRankUpdate, SourceTensor
from .checkpoint import Checkpoint
from .json_files import load_json, read_config
from .safetensors import read_file
from .state_dict import StateDictCheckpoint
from .torch_pickle import read_torch_file

CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
PAIR_SUFFIXES = {".lora_A.weight": 0, ".lora_B.weight": 1}
# adapter_config.json settings that change the update beyond (alpha / r) · B @ A; refused when set
UNSUPPORTED = {
    "use_dora": "DoRA (use_dora) rescales the adapted weight by a learned magnitude",
    "use_rslora": "rsLoRA (use_rslora) scales by alpha / sqrt(r)",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "modules_to_save": "modules trained whole (modules_to_save)",
    "fan_in_fan_out": "fan_in_fan_out weights (stored [in, out])",
    "alora_invocation_tokens": "aLoRA (alora_invocation_tokens) applies the update after an invocation only",
    "trainable_token_indices": "trained token rows (trainable_token_indices)",
}


# the update of one base weight: A [r, in] and B [out, r]
LoraPair = tuple[SourceTensor, SourceTensor]


@dataclass
class LoraAdapter(StateDictCheckpoint):
    format_name = "peft-lora"
    alpha: float = 0.0
    rank: int = 0
    # by the base weight's HF name, in the adapter's order
    pairs: dict[str, LoraPair] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def details(self) -> dict[str, Any]:
        return {"lora_alpha": self.alpha, "r": self.rank, "adapted_weights": len(self.pairs)}

    def _refuse(self) -> HfTensors:
        raise ConversionError("is a LoRA adapter: convert it to a GGUF adapter (-o adapter.gguf), or merge it into its "
                              "base model with --merge-lora", file=self.path)

    def hf_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        return self._refuse()

    def trainer_tensors(self, catalog: Catalog, forced: str | None) -> HfTensors:
        return self._refuse()

    def plan_gguf(self, out: Path, opts: ConvertOptions, catalog: Catalog) -> Plan:
        return plan_adapter_gguf(self, self.pairs, self.alpha, out, opts, catalog)


def recognises(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def _settings(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    doc = load_json(path.read_bytes(), path, "cannot read the adapter config")
    if not isinstance(doc, dict):
        raise ConversionError("is not a JSON object", file=path)
    if doc.get("peft_type") != "LORA":
        raise ConversionError(f"peft_type is {doc.get('peft_type')!r}; pyconv reads LoRA adapters ('LORA')", file=path)
    for key, what in UNSUPPORTED.items():
        if doc.get(key):
            raise ConversionError(f"{what} is not supported", file=path)
    if doc.get("bias", "none") != "none":
        raise ConversionError(f"bias is {doc['bias']!r}: trained biases are not supported (only 'none')", file=path)
    for key in ("r", "lora_alpha"):
        value = doc.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConversionError(f"{key} is {value!r}, not a positive number", file=path)
    return doc


def _weights(folder: Path) -> tuple[Path, dict[str, SourceTensor]]:
    present = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    if not present:
        raise ConversionError(f"no {' or '.join(WEIGHT_FILES)} beside {CONFIG}", file=folder)
    path = present[0]
    return path, (read_file(path)[0] if path.suffix == ".safetensors" else read_torch_file(path)[0])


def _pairs(path: Path, tensors: dict[str, SourceTensor], rank: int) -> dict[str, LoraPair]:
    halves: dict[str, list[SourceTensor | None]] = {}
    for name, t in tensors.items():
        suffix = next((s for s in PAIR_SUFFIXES if name.endswith(s)), None)
        if suffix is None or not name.startswith(PEFT_PREFIX):
            raise ConversionError("is not a lora_A/lora_B weight (DoRA magnitudes, embedding adapters and modules "
                                  "trained whole are not supported)", file=path, tensor=name)
        if t.dtype not in ("f32", "f16", "bf16") or len(t.shape) != 2:
            raise ConversionError(f"{t.dtype}{list(t.shape)}: LoRA weights are 2-d floats", file=path, tensor=name)
        base = name[len(PEFT_PREFIX):-len(suffix)] + ".weight"
        halves.setdefault(base, [None, None])[PAIR_SUFFIXES[suffix]] = t
    pairs = {}
    for base, (a, b) in halves.items():
        if a is None or b is None:
            half = "lora_B" if a is not None else "lora_A"
            raise ConversionError(f"has no {half} beside it", file=path, tensor=PEFT_PREFIX + base)
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ConversionError(f"lora_A {list(a.shape)} and lora_B {list(b.shape)} are not of rank r = {rank}",
                                  file=path, tensor=PEFT_PREFIX + base)
        pairs[base] = (a, b)
    if not pairs:
        raise ConversionError("holds no LoRA weights", file=path)
    return pairs


def _base_config(folder: Path, settings: dict[str, Any], base: str | None) -> tuple[Path, dict[str, Any]]:
    named = settings.get("base_model_name_or_path")
    if base is not None:
        where = Path(base)
    elif isinstance(named, str) and named and Path(named).is_dir():
        where = Path(named)
    else:
        said = f"names {named!r}, which is not a local folder" if named else "names no base model"
        raise ConversionError(f"the base model's config.json is needed and {CONFIG} {said}; pass --base BASE_DIR",
                              file=folder)
    config = read_config(where) if where.is_dir() else None
    if config is None:
        raise ConversionError("has no config.json for the adapter's base model", file=where)
    return where, config


def open_adapter(path: Path, opts: ConvertOptions) -> LoraAdapter:
    settings = _settings(path)
    weights, tensors = _weights(path)
    rank = int(settings["r"])
    pairs = _pairs(weights, tensors, rank)
    base, config = _base_config(path, settings, opts.source.base)
    return LoraAdapter(path, tensors, [weights], config=config, side_folder=base, alpha=float(settings["lora_alpha"]),
                       rank=rank, pairs=pairs)


def _spec(text: str) -> tuple[Path, float]:
    """``DIR`` or ``DIR:SCALE`` of --merge-lora."""
    folder, sep, scale = text.rpartition(":")
    if sep and folder:
        try:
            return Path(folder), float(scale)
        except ValueError:
            pass
    return Path(text), 1.0


def merge_adapters(ck: Checkpoint, specs: tuple[str, ...]) -> None:
    """Each adapter's pairs attached to the base weights they update (the engine adds them as it reads),
    in place; an adapter weight the checkpoint does not hold as a plain 2-d float array is refused."""
    for spec in specs:
        folder, scale = _spec(spec)
        if not recognises(folder):
            raise ConversionError(f"--merge-lora: not a PEFT adapter folder (no {CONFIG})", file=folder)
        settings = _settings(folder)
        weights, tensors = _weights(folder)
        rank = int(settings["r"])
        factor = scale * float(settings["lora_alpha"]) / rank
        for hf, (a, b) in _pairs(weights, tensors, rank).items():
            t = ck.tensors.get(hf)
            if t is None:
                raise ConversionError(f"adapts '{hf}', which {ck.path} does not hold", file=weights, tensor=b.name)
            if t.shape != (b.shape[0], a.shape[1]):
                raise ConversionError(f"lora_B {list(b.shape)} @ lora_A {list(a.shape)} does not fit the base weight "
                                      f"{list(t.shape)}", file=weights, tensor=hf)
            # the engine adds B @ A to the storage's elements: the weight must be all of it, in row-major order
            whole = t.offset == 0 and t.strides in (None, (t.shape[1], 1)) and t.nbytes == dtypes.nbytes(t.dtype, t.numel)
            if not whole or not (dtypes.is_float(t.dtype) or t.scale is not None):
                raise ConversionError(f"a {t.dtype} weight that is not a whole row-major float array cannot take a "
                                      "LoRA update", file=ck.path, tensor=hf)
            ck.tensors[hf] = replace(t, updates=(*t.updates, LowRankUpdate(a, b, factor)))
        ck.files.append(weights)
