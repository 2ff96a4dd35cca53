"""``convert``: open a checkpoint, plan the target, size it, then stream it into place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import engine
from .compression import compress_staged, compressed_names, opened
from .engine import Layout
from .errors import ConversionError
from .fingerprint import FollowingHasher, hash_in_background, sha256_file
from .options import ConvertOptions
from .plan import Plan
from .sources.checkpoint import Checkpoint
from .targets.formats import pick_target
from .targets.staging import Staging, check_free_space, write_synced


@dataclass
class ConversionResult:
    output: Path
    plan: Plan
    layout: Layout
    checkpoint: Checkpoint
    dry_run: bool
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bytes_written(self) -> int:
        return self.layout.total_bytes + sum(len(b) for b in self.plan.side_files.values())


def _refuse_overwriting_inputs(ck: Checkpoint, out: Path) -> None:
    target = out.resolve()
    for f in ck.files:
        r = f.resolve()
        if r == target or target in r.parents:
            raise ConversionError("the output would replace the input; choose another output path", file=out)


def convert(source: str | Path, output: str | Path, **options: Any) -> ConversionResult:
    """Convert ``source`` into ``output``. Options are the fields of ``ConvertOptions``' parts, by name
    (``outtype="q8_0"``, ``tp_size=2``)."""
    return convert_with(source, output, ConvertOptions.of(**options))


def convert_with(source: str | Path, output: str | Path, opts: ConvertOptions) -> ConversionResult:
    """Convert ``source`` into ``output`` with ``opts``."""
    out = Path(output)
    # a .zst source is decompressed beside the output, which needs room for what it holds anyway
    with opened(Path(source), opts, near=out.parent) as ck:
        return _convert(ck, out, opts)


def _convert(ck: Checkpoint, out: Path, opts: ConvertOptions) -> ConversionResult:
    target = pick_target(opts.common.to, out)
    plan = target.plan(ck, out, opts)
    lay = engine.layout(plan)
    folder = target.is_folder(out)
    compressed, uncompressed = compressed_names(opts, folder, [f.name for f in plan.files])
    # missing parent folders are created (and removed again if the conversion fails)
    existing = next(p for p in (out.parent.absolute(), *out.parent.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConversionError("is a file, so the output cannot go below it", file=existing)
    _refuse_overwriting_inputs(ck, out)
    needed = lay.total_bytes + sum(len(b) for b in plan.side_files.values())
    needed += lay.total_bytes if compressed else 0  # zstd never writes more than the data, plus a little
    check_free_space(existing, needed)
    result = ConversionResult(out, plan, lay, ck, opts.common.dry_run)
    if opts.common.dry_run:
        return result
    finish = target.finish if opts.common.fingerprint else None
    if finish is None:
        plan.late_files = []
    names = [f.name for f in plan.files] + list(plan.side_files) + plan.late_files
    names = [n for n in names if n not in uncompressed] + compressed
    sidecars = () if folder else tuple(n for n in names if n != out.name)
    started = time.perf_counter()
    bar = engine.ProgressBar(f"→ {out.name}", enabled=opts.common.progress)
    try:
        with Staging(out, folder=folder, force=opts.common.force, sidecars=sidecars) as staging:
            paths = [staging.path(f.name) for f in plan.files]
            source_hashes = hash_in_background(ck.files) if finish and opts.common.hash_inputs else None
            follower = FollowingHasher(paths) if finish else None

            def progress(done: int, total: int, prefixes: list[int]) -> None:
                bar(done, total, prefixes)
                if follower:
                    follower.advance(prefixes)

            try:
                plan.reports = result.reports = engine.execute(plan, paths, threads=opts.common.threads,
                                                               chunk_bytes=opts.common.chunk_bytes, progress=progress)
            except BaseException:
                if follower:
                    follower.stop()
                raise
            output_hashes = follower.result() if follower else {}
            for changed in target.seal(plan, paths) if target.seal else []:  # rewritten after the engine
                output_hashes[changed] = sha256_file(changed)
            side = dict(plan.side_files)
            if finish:
                side.update(finish(plan, paths, ck, opts, source_hashes.result() if source_hashes else {}, output_hashes))
            for name, data in side.items():
                try:
                    write_synced(staging.path(name), data)
                except OSError as e:  # a full disk: named by the file the user would have got
                    raise ConversionError(f"cannot write it: {e.strerror}", file=(out if folder else out.parent) / name) from None
            if compressed:
                compress_staged(staging, [f.name for f in plan.files], threads=opts.common.threads, keep=not uncompressed)
            staging.commit()
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    result.files = [out / n for n in names] if folder else [out.parent / n for n in names]
    return result
