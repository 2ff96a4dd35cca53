"""DeepSpeed ZeRO checkpoints (stages 1, 2 and 3): every tensor as byte segments across rank files.

Only the pickles' structure is read. A trainable parameter's fp32 master copy is a run of elements
in the ranks' flat optimizer partitions; the reader walks ``param_shapes`` over those partitions
(stages 1/2: one stream per param group across ranks; stage 3: one partition per parameter and
rank) and hands the engine the segments, so no group is ever assembled in memory. The rules and
their consistency checks are in docs/from-zero.md, "How the weights are rebuilt";
``param_slice_mappings`` is never used (it is wrong under ``round_robin_gradients``).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import dtypes
from ..errors import ConversionError
from ..options import ConvertOptions
from .base import Segment, SourceTensor
from .json_files import read_config
from .state_dict import StateDictCheckpoint
from .torch_pickle import PickledTensor, PickleRefused, TorchFile, inert_class, load

_MODEL_FILE = re.compile(r"(?:zero_pp_rank_(\d+)_)?mp_rank_(\d+)_model_states\.pt")
_OPTIM_FILE = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt")
_PIPELINE_FILE = re.compile(r"layer_\d+-model_states\.pt")
WEIGHTS = ("master", "module")


def _zero_stage(value: Any) -> int:
    # ZeroStageEnum is an int enum pickled as ZeroStageEnum(<int>): its value is all that matters
    if not isinstance(value, int) or isinstance(value, bool):
        raise PickleRefused(f"ZeroStageEnum({value!r}) is not an integer stage")
    return value


# DeepSpeed's classes in its pickles, read as data so DeepSpeed need not be installed.
DEEPSPEED_GLOBALS: dict[tuple[str, str], Any] = {
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"): _zero_stage,
    **{key: inert_class(*key) for key in (
        ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
        ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
        ("deepspeed.utils.tensor_fragment", "fragment_address"),
    )},
}


def _has_states(folder: Path) -> bool:
    return any(_MODEL_FILE.fullmatch(p.name) or _OPTIM_FILE.fullmatch(p.name) for p in folder.iterdir())


def _tags(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and _has_states(d))


def recognises(path: Path) -> bool:
    return path.is_dir() and (_has_states(path) or bool(_tags(path)))


def tag_folder(path: Path) -> Path:
    """The folder holding one checkpoint's rank files: ``path`` itself, the tag named by ``latest``,
    or the only tag folder there is."""
    if _has_states(path):
        return path
    latest = path / "latest"
    if latest.is_file():
        tag = latest.read_text(encoding="utf-8", errors="replace").strip()
        if not tag or "/" in tag or "\\" in tag or tag in (".", ".."):
            raise ConversionError(f"'latest' names {tag!r}, which is not a checkpoint folder name", file=latest)
        if not (path / tag).is_dir():
            raise ConversionError(f"'latest' names '{tag}', which is not a folder here", file=latest)
        return path / tag
    tags = _tags(path)
    if not tags:
        raise ConversionError("no DeepSpeed checkpoint (no *_model_states.pt here or in a tag folder)", file=path)
    if len(tags) != 1:
        names = ", ".join(t.name for t in tags[:6])
        raise ConversionError(f"several checkpoints ({names}) and no 'latest' file: name one of the folders", file=path)
    return tags[0]


def _ranked(folder: Path, pattern: re.Pattern[str], what: str) -> list[Path]:
    """Files matching ``pattern`` sorted by their data-parallel rank, which must run 0..n-1."""
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m is None:
            continue
        if int(m.group(2)) != 0:
            raise ConversionError(f"'{p.name}' is from tensor-parallel rank {int(m.group(2))}: tensor-parallel ZeRO "
                                  "checkpoints are not supported", file=folder)
        rank = int(m.group(1) or 0)
        if rank in found:
            raise ConversionError(f"two {what} files for rank {rank}: '{found[rank].name}' and '{p.name}'", file=folder)
        found[rank] = p
    if sorted(found) != list(range(len(found))):
        raise ConversionError(f"{what} files are for ranks {sorted(found)}: some are missing", file=folder)
    return [found[r] for r in range(len(found))]


def _field(tf: TorchFile, obj: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ConversionError(f"{where or 'the checkpoint'} has no '{key}'", file=tf.path)
    value = obj[key]
    if not isinstance(value, kind):
        raise ConversionError(f"'{key}' is a {type(value).__name__}, expected {getattr(kind, '__name__', kind)}", file=tf.path)
    return value


def _flat(tf: TorchFile, value: Any, what: str, dtype: str | None = "f32") -> SourceTensor:
    """A 1-D partition saved in ``tf`` (of ``dtype``, unless None) as a SourceTensor over its bytes."""
    if not isinstance(value, PickledTensor) or len(value.shape) != 1 or (dtype and value.dtype != dtype):
        raise ConversionError(f"{what} is not a 1-D {dtype or 'float'} tensor", file=tf.path)
    source = tf.source(what, value)
    if source.strides is not None:  # partitions are read as runs of bytes, element after element
        raise ConversionError(f"{what} is not a contiguous 1-D tensor (stride {value.strides[0]})", file=tf.path)
    return source


def _shapes(tf: TorchFile, value: Any, what: str) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, dict):
        raise ConversionError(f"{what} is a {type(value).__name__}, expected a name -> shape mapping", file=tf.path)
    out = {}
    for name, shape in value.items():
        if not isinstance(name, str) or not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ConversionError(f"{what} maps {name!r} to {shape!r}, not to a shape", file=tf.path)
        out[name] = shape
    return out


@dataclass
class _Stream:
    """Segments read one after another as one run of elements of ``itemsize`` bytes."""

    itemsize: int
    starts: list[int] = field(default_factory=list)   # first element of each segment
    segments: list[Segment] = field(default_factory=list)
    length: int = 0

    def add(self, source: SourceTensor) -> None:
        for seg in source.segments:
            self.starts.append(self.length)
            self.segments.append(seg)
            self.length += seg.nbytes // self.itemsize

    def take(self, start: int, count: int) -> list[Segment]:
        """The byte ranges holding elements ``[start, start + count)``."""
        assert start >= 0 and start + count <= self.length
        out = []
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while count > 0:
            seg, first = self.segments[i], self.starts[i]
            skip = start - first
            n = min(count, seg.nbytes // self.itemsize - skip)
            if n > 0:
                out.append(Segment(seg.path, seg.offset + skip * self.itemsize, n * self.itemsize))
            start += n
            count -= n
            i += 1
        return out


@dataclass
class _Zero:
    folder: Path
    stage: int
    optimizer: str                 # "ZeRO" or "BF16_Optimizer"
    optim: list[TorchFile]         # one per rank
    models: list[TorchFile]        # rank 0's first; stage 3 has one per rank
    osds: list[dict[str, Any]]     # each rank's optimizer_state_dict

    @property
    def world_size(self) -> int:
        return len(self.optim)

    @property
    def model(self) -> dict[str, Any]:
        return self.models[0].root  # type: ignore[no-any-return]

    def error(self, message: str, file: Path | None = None, tensor: str | None = None) -> ConversionError:
        return ConversionError(message, file=file or self.folder, tensor=tensor)

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        groups = _field(self.models[0], self.model, "param_shapes", list)
        return [_shapes(self.models[0], g, f"param_shapes[{i}]") for i, g in enumerate(groups)]

    def master_stage12(self, groups: list[dict[str, tuple[int, ...]]]) -> dict[str, SourceTensor]:
        """Stages 1/2: per group, the ranks' fp32 slices form one stream ``param, pad, param, ...``."""
        ws = self.world_size
        parts = [_field(tf, osd, "single_partition_of_fp32_groups", list, "optimizer_state_dict")
                 for tf, osd in zip(self.optim, self.osds)]
        for tf, p in zip(self.optim, parts):
            if len(p) != len(groups):
                raise self.error(f"{len(p)} fp32 partitions for {len(groups)} param groups in param_shapes", tf.path)
        paddings = self.osds[0].get("param_alignment_paddings")
        if paddings is not None and (not isinstance(paddings, list) or len(paddings) != len(groups)):
            raise self.error("param_alignment_paddings does not have one list per param group", self.optim[0].path)
        out: dict[str, SourceTensor] = {}
        for g, shapes in enumerate(groups):
            stream = _Stream(4)
            for tf, p in zip(self.optim, parts):
                stream.add(_flat(tf, p[g], f"single_partition_of_fp32_groups[{g}]"))
            pads = paddings[g] if paddings is not None else [0] * len(shapes)
            if not isinstance(pads, list) or len(pads) != len(shapes) or not all(isinstance(x, int) and x >= 0 for x in pads):
                raise self.error(f"param_alignment_paddings[{g}] does not give one padding per parameter of the group", self.optim[0].path)
            offset = end = 0
            for (name, shape), pad in zip(shapes.items(), pads):
                n = math.prod(shape)
                if offset + n > stream.length:
                    raise self.error(f"param group {g} needs more than the {stream.length} fp32 elements its ranks saved",
                                     tensor=name)
                out[name] = SourceTensor(name, "f32", shape, tuple(stream.take(offset, n)))
                end = offset + n
                offset = end + pad
            # what follows the last parameter is padding: its own alignment, then less than 2 x world
            # size to make the group split evenly (kept by BF16_Optimizer, dropped by ZeRO 1/2)
            tail = stream.length - end
            if not 0 <= tail < 2 * ws + (pads[-1] if pads else 0):
                raise self.error(f"param group {g}: the parameters in param_shapes take {end} of the {stream.length} saved "
                                 f"fp32 elements; the rest ({tail}) is more than padding, so the files do not match")
        return out

    def master_stage3(self, groups: list[dict[str, tuple[int, ...]]]) -> dict[str, SourceTensor]:
        """Stage 3: each parameter is split on its own into ceil(n / ws) elements per rank."""
        ws = self.world_size
        streams = []
        for tf, osd in zip(self.optim, self.osds):
            stream = _Stream(4)
            for i, t in enumerate(_field(tf, osd, "fp32_flat_groups", list, "optimizer_state_dict")):
                stream.add(_flat(tf, t, f"fp32_flat_groups[{i}]"))
            streams.append(stream)
        need = sum(-(-math.prod(s) // ws) for shapes in groups for s in shapes.values())
        for tf, stream in zip(self.optim, streams):
            if stream.length != need:
                raise self.error(f"param_shapes need {need} fp32 elements per rank, this rank saved {stream.length}", tf.path)
        out: dict[str, SourceTensor] = {}
        offset = 0
        for shapes in groups:
            for name, shape in shapes.items():
                n = math.prod(shape)
                per_rank = -(-n // ws)
                segments: list[Segment] = []
                for r, stream in enumerate(streams):
                    k = min(per_rank, n - r * per_rank)
                    if k > 0:
                        segments += stream.take(offset, k)
                out[name] = SourceTensor(name, "f32", shape, tuple(segments))
                offset += per_rank
        return out

    def frozen_stage3(self) -> dict[str, SourceTensor]:
        """Stage 3: each rank's model file holds ceil(n / ws) elements of every frozen parameter."""
        shapes = self.model.get("frozen_param_shapes")
        if shapes is None:
            return {}
        ws = self.world_size
        out = {}
        for name, shape in _shapes(self.models[0], shapes, "frozen_param_shapes").items():
            n = math.prod(shape)
            parts = [_flat(tf, _field(tf, tf.root, "frozen_param_fragments", dict).get(name),
                           f"frozen_param_fragments['{name}']", None) for tf in self.models]
            dtype = parts[0].dtype
            stream = _Stream(int(dtypes.info(dtype)["block_bytes"]))
            for tf, part in zip(self.models, parts):
                if part.numel != -(-n // ws) or part.dtype != dtype:
                    raise self.error(f"frozen fragment of {part.numel} {part.dtype} elements; expected {-(-n // ws)} "
                                     f"{dtype} elements", tf.path, name)
                stream.add(part)
            out[name] = SourceTensor(name, dtype, shape, tuple(stream.take(0, n)))
        return out


def _load_zero(folder: Path) -> _Zero:
    names = [p.name for p in folder.iterdir()]
    if any(_PIPELINE_FILE.fullmatch(n) for n in names):
        raise ConversionError("pipeline-parallel checkpoints (layer_XX-model_states.pt) are not supported", file=folder)
    if any(n.startswith(("expp_rank_", "expert_")) for n in names):
        raise ConversionError("MoE expert-parallel checkpoints are not supported", file=folder)
    optim_files = _ranked(folder, _OPTIM_FILE, "optimizer state")
    model_files = _ranked(folder, _MODEL_FILE, "model state")
    if not model_files:
        raise ConversionError("no *model_states.pt file", file=folder)
    if not optim_files:
        raise ConversionError("no *optim_states.pt files: a stage-0 (not ZeRO) checkpoint; its model_states.pt "
                              "holds the module under 'module'", file=folder)
    optim = [load(p, DEEPSPEED_GLOBALS) for p in optim_files]
    osds = [_field(tf, tf.root, "optimizer_state_dict", dict) for tf in optim]
    stages: set[int | str] = set()  # a ZeRO stage, or "bf16" for BF16_Optimizer
    for tf, osd in zip(optim, osds):
        if "zero_stage" in osd:
            stage = osd["zero_stage"]  # an int, or ZeroStageEnum read as one
            if not isinstance(stage, int) or isinstance(stage, bool):
                raise ConversionError(f"zero_stage {stage!r} is not a ZeRO stage", file=tf.path)
            stages.add(stage)
        elif "single_partition_of_fp32_groups" in osd:
            stages.add("bf16")  # BF16_Optimizer (bf16, stage 1, fp32 gradient accumulation): no zero_stage key
        else:
            raise ConversionError("optimizer_state_dict has neither 'zero_stage' nor fp32 partitions: not a ZeRO optimizer state", file=tf.path)
    if len(stages) != 1 or not stages <= {1, 2, 3, "bf16"}:
        raise ConversionError(f"the ranks' optimizer files disagree on or have no valid ZeRO stage ({sorted(map(str, stages))})", file=folder)
    kind = stages.pop()
    stage = 1 if kind == "bf16" else int(kind)
    ws = len(optim)
    for tf, osd in zip(optim, osds):
        counts = _field(tf, osd, "partition_count", (int, list), "optimizer_state_dict")
        if isinstance(counts, list) and not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise ConversionError(f"partition_count {counts!r} is not a rank count per param group", file=tf.path)
        counted = max(counts) if isinstance(counts, list) and counts else counts
        if counted != ws:
            raise ConversionError(f"partition_count says {counted} ranks, the folder has {ws} optimizer files "
                                  "(a missing rank, or files left from another run)", file=tf.path)
    if (stage == 3) != (model_files[0].name.startswith("zero_pp_rank_")):
        raise ConversionError(f"stage-{stage} optimizer files next to '{model_files[0].name}'", file=folder)
    if stage == 3 and len(model_files) != ws:
        raise ConversionError(f"{len(model_files)} model state files for {ws} ranks", file=folder)
    models = [load(p, DEEPSPEED_GLOBALS) for p in model_files[: ws if stage == 3 else 1]]
    for tf in models:
        if not isinstance(tf.root, dict):
            raise ConversionError(f"holds a {type(tf.root).__name__}, not DeepSpeed's model states", file=tf.path)
    declared = models[0].root.get("dp_world_size")
    if isinstance(declared, int) and declared != ws:
        raise ConversionError(f"dp_world_size is {declared}, the folder has {ws} optimizer files", file=models[0].path)
    return _Zero(folder, stage, "BF16_Optimizer" if kind == "bf16" else "ZeRO", optim, models, osds)


def _module(zero: _Zero) -> dict[str, PickledTensor]:
    module = _field(zero.models[0], zero.model, "module", dict)
    for name, t in module.items():
        if not isinstance(name, str) or not isinstance(t, PickledTensor):
            raise zero.error(f"'module' maps {name!r} to a {type(t).__name__}, not a tensor", zero.models[0].path)
    return module  # type: ignore[no-any-return]


@dataclass
class ZeroCheckpoint(StateDictCheckpoint):
    format_name = "zero"
    stage: int = 0
    optimizer: str = "ZeRO"          # or "BF16_Optimizer"
    world_size: int = 1
    tag: str = ""                    # the checkpoint's folder
    weights: str = "master"          # the copy read: "master" (fp32) or "module"
    ds_version: str | int | None = None
    global_steps: str | int | None = None

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"zero_stage": self.stage, "zero_optimizer": self.optimizer,
                                 "world_size": self.world_size, "tag": self.tag, "zero_weights": self.weights}
        for key, value in (("ds_version", self.ds_version), ("global_steps", self.global_steps)):
            if value is not None:
                found[key] = value
        return found


def _saved(value: Any) -> str | int | None:
    return value if isinstance(value, (str, int)) else None


def open_zero(path: Path, opts: ConvertOptions) -> ZeroCheckpoint:
    """A DeepSpeed checkpoint folder (with ``latest``, or one tag folder) as tensors over the rank files."""
    if opts.source.zero_weights not in WEIGHTS:
        raise ConversionError(f"zero_weights must be one of {', '.join(WEIGHTS)}, not {opts.source.zero_weights!r}")
    folder = tag_folder(path)
    zero = _load_zero(folder)
    if opts.source.zero_weights == "module" and zero.stage == 3:
        raise ConversionError("--zero-weights module: a stage-3 checkpoint keeps no full module copy (its 'module' "
                              "holds empty placeholders); use the fp32 master weights (the default)", file=folder)
    model_tf = zero.models[0]
    module = _module(zero)
    groups = zero.param_shapes()
    trainable_shapes = {n: s for g in groups for n, s in g.items()}
    buffers = _field(model_tf, zero.model, "buffer_names", list)
    if not all(isinstance(b, str) for b in buffers):
        raise zero.error("buffer_names is not a list of names", model_tf.path)
    aliases = zero.model.get("shared_params") or {}
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise zero.error("shared_params is not a name -> name mapping", model_tf.path)

    values: dict[str, SourceTensor] = {}
    if opts.source.zero_weights == "master":
        values.update(zero.master_stage3(groups) | zero.frozen_stage3() if zero.stage == 3 else zero.master_stage12(groups))
    else:
        missing = [n for n in trainable_shapes if n not in module]
        if missing:
            raise zero.error("a trainable parameter in param_shapes is missing from 'module'", model_tf.path, missing[0])
    for name, t in module.items():
        if name in values or name in aliases:
            continue
        if zero.stage == 3 and name not in buffers:
            raise zero.error("stage-3 'module' holds only a placeholder for it and no partition has its values "
                             "(saved with exclude_frozen_parameters?)", model_tf.path, name)
        # buffers; at stages 1/2 also frozen parameters (stage 1 saves them only here), and with
        # --zero-weights module the trainable ones
        values[name] = model_tf.source(name, t)
    if zero.stage < 3:
        for name, shape in trainable_shapes.items():
            if name in module and module[name].shape != shape:
                raise zero.error(f"param_shapes says {shape}, 'module' holds {module[name].shape}", model_tf.path, name)
    for alias, source in aliases.items():
        if source not in values:
            raise zero.error(f"shared_params ties it to '{source}', which the checkpoint does not have", model_tf.path, alias)
        values[alias] = replace(values[source], name=alias)

    order = [n for n in module if n in values] + [n for n in values if n not in module]
    tensors = {n: values[n] for n in order}
    files = [tf.path for tf in zero.models] + [tf.path for tf in zero.optim]
    # HF's Trainer keeps config.json and the tokenizer beside 'latest', above the tag folder
    return ZeroCheckpoint(path, tensors, files, config=read_config(folder.parent), side_folder=folder.parent,
                          stage=zero.stage, optimizer=zero.optimizer, world_size=zero.world_size, tag=folder.name,
                          weights=opts.source.zero_weights, ds_version=_saved(zero.model.get("ds_version")),
                          global_steps=_saved(zero.model.get("global_steps")))
