"""The output formats pyconv writes: each target turns an opened checkpoint into a plan for one kind of
output. What differs by source format the checkpoint's own methods answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..errors import ConversionError
from ..options import ConvertOptions
from ..plan import OutTensor, Plan, View
from ..sources.checkpoint import Checkpoint
from . import gguf as gg
from . import safetensors as st
from .hf import finish_hf, plan_hf, seal_hf
from .native import plan_native

# (plan, temp paths of the written files, checkpoint, options, input hashes, output hashes) -> late side files
Finisher = Callable[[Plan, list[Path], Checkpoint, ConvertOptions, dict[Path, str], dict[Path, str]], dict[str, bytes]]


@dataclass(frozen=True)
class Target:
    name: str
    suffixes: tuple[str, ...]                                # output suffixes that imply this target
    plan: Callable[[Checkpoint, Path, ConvertOptions], Plan]
    is_folder: Callable[[Path], bool]                        # is this output path a folder for the target
    finish: Finisher | None = None                           # writes plan.late_files after the engine ran
    seal: Callable[[Plan, list[Path]], list[Path]] | None = None  # completes written files in place (zip CRCs); returns them


def _plan_gguf(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    return ck.plan_gguf(out, opts, registry.catalog())


def _plan_safetensors(ck: Checkpoint, out: Path, opts: ConvertOptions) -> Plan:
    outtype = opts.common.outtype
    st.check_outtype(outtype)
    _folder, stem = st.output_names(out)
    tensors = [OutTensor.from_view(name, View.of(t), st.out_dtype(t.value_dtype, outtype, name)) for name, t in ck.tensors.items()]
    return st.place_in_files(tensors, stem=stem, max_shard_size=opts.common.max_shard_size, metadata=ck.metadata)


TARGETS: dict[str, Target] = {
    "safetensors": Target("safetensors", (".safetensors",), _plan_safetensors, lambda out: st.output_names(out)[0]),
    "gguf": Target("gguf", (".gguf",), _plan_gguf, lambda out: False, gg.finish_gguf),
    "hf": Target("hf", (), plan_hf, lambda out: True, finish_hf, seal_hf),
    "native": Target("native", (), plan_native, lambda out: True),
}


def pick_target(to: str | None, out: Path) -> Target:
    if to is not None:
        if to not in TARGETS:
            raise ConversionError(f"unknown target '{to}' (targets: {', '.join(TARGETS)})")
        return TARGETS[to]
    for t in TARGETS.values():
        if out.suffix in t.suffixes:
            return t
    raise ConversionError(f"cannot tell the output format from '{out.name}'; pass --to ({', '.join(TARGETS)})")
