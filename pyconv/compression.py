"""zstd artifacts: ``--compress zstd`` writes ``<file>.zst`` beside a file output (or instead of it, with
``--compress-only``), and ``.zst`` inputs are decompressed before they are read.

Compression streams the finished output through zstd's multi-threaded mode, whose bytes do not depend on
the number of workers, so a ``.zst`` is as reproducible as the file in it; it gets its own ``.sha256``.
The engine maps its inputs, so a compressed input is first decompressed, streamed, into a temporary
folder beside the output (or in the system's temporary folder for ``inspect``) that is removed
afterwards. Its frames are walked by their headers first: a truncated file is refused before any byte
is written, and the size the frames declare is checked against the free space.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import ConversionError
from .fingerprint import sha256_file
from .options import COMPRESSION_FORMATS, ConvertOptions
from .sources.checkpoint import Checkpoint
from .sources.json_files import read_config
from .sources.opening import open_checkpoint
from .targets.staging import Staging, free_bytes, write_synced
from .units import format_bytes

SUFFIX = ".zst"
LEVEL = 3  # zstd's default: about as fast as the disk, most of what higher levels gain on weights
CHUNK = 1 << 20
_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # the low four bits are free


def compressed_names(opts: ConvertOptions, folder: bool, files: list[str]) -> tuple[list[str], list[str]]:
    """(names ``--compress`` adds, names ``--compress-only`` leaves out) for an output of ``files``."""
    wanted = opts.compression
    if wanted.compress is None:
        if wanted.compress_only:
            raise ConversionError("--compress-only needs --compress zstd")
        return [], []
    if wanted.compress not in COMPRESSION_FORMATS:
        raise ConversionError(f"--compress {wanted.compress} is not a format pyconv writes ({', '.join(COMPRESSION_FORMATS)})")
    if folder:
        raise ConversionError("--compress writes a .zst beside a file output (GGUF, a .safetensors file); archive a "
                              "folder output with tar --zstd")
    added = [n for f in files for n in (f + SUFFIX, f + SUFFIX + ".sha256")]
    return added, files if wanted.compress_only else []


def compress_file(source: Path, dest: Path, threads: int) -> None:
    """``source`` as one zstd frame in ``dest`` (with its size and a checksum), streamed and synced."""
    import zstandard

    # zstd's single-threaded mode (0 workers) writes other bytes than its multi-threaded one
    workers = threads or os.cpu_count() or 1
    compressor = zstandard.ZstdCompressor(level=LEVEL, threads=workers, write_checksum=True, write_content_size=True)
    # a chunk at a time from Python, so that Ctrl-C is noticed between chunks rather than after the whole
    # file, and an interrupted frame is simply dropped (a stream writer would try to end it on the way out)
    packer = compressor.compressobj(size=source.stat().st_size)
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            out.write(packer.compress(chunk))
        out.write(packer.flush())
        out.flush()
        os.fsync(out.fileno())


def compress_staged(staging: Staging, files: list[str], *, threads: int, keep: bool) -> None:
    """The staged ``files`` compressed beside themselves with a fingerprint each; dropped unless ``keep``."""
    for name in files:
        packed = staging.path(name + SUFFIX)
        try:
            compress_file(staging.path(name), packed, threads)
            write_synced(staging.path(name + SUFFIX + ".sha256"), f"sha256-{sha256_file(packed)}\n".encode())
        except OSError as e:  # a full disk, named by the file the user would have got
            raise ConversionError(f"cannot write it: {e.strerror}", file=staging.parent / (name + SUFFIX)) from None
        if not keep:
            staging.discard(name)


def _pread(f: BinaryIO, n: int, at: int) -> bytes:
    return os.pread(f.fileno(), n, at)


def declared_size(path: Path) -> int | None:
    """Walk the frames of a .zst file by their headers: the total size they declare (None when a frame does
    not say), after checking that the file is whole frames and nothing else."""
    import zstandard

    size = path.stat().st_size
    if size == 0:
        raise ConversionError("is empty, not a zstd stream", file=path)
    total: int | None = 0
    at = 0
    with path.open("rb") as f:
        while at < size:
            head = _pread(f, 18, at)  # the longest frame header
            magic = int.from_bytes(head[:4], "little")
            if len(head) >= 8 and magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
                at += 8 + int.from_bytes(head[4:8], "little")
                if at > size:
                    raise ConversionError(f"is truncated: a skippable zstd frame ends past the {size} bytes of the file", file=path)
                continue
            if len(head) < 4 or magic != _FRAME_MAGIC:
                raise ConversionError(f"is not a zstd stream (no frame starts at byte {at})", file=path)
            try:
                params = zstandard.get_frame_parameters(head)
                at += zstandard.frame_header_size(head)
            except zstandard.ZstdError as e:
                raise ConversionError(f"has a broken zstd frame header at byte {at} ({e})", file=path) from None
            last = False
            while not last:
                block = _pread(f, 3, at)
                if len(block) < 3:
                    break
                word = int.from_bytes(block, "little")
                last, kind, length = bool(word & 1), (word >> 1) & 3, word >> 3
                if kind == 3:
                    raise ConversionError(f"has a zstd block of the reserved type at byte {at}", file=path)
                at += 3 + (1 if kind == 1 else length)  # an RLE block stores its one byte
            at += 4 if params.has_checksum else 0
            if not last or at > size:
                raise ConversionError(f"is truncated: its last zstd frame ends past the {size} bytes of the file", file=path)
            if params.content_size >= zstandard.CONTENTSIZE_ERROR:
                total = None
            elif total is not None:
                total += params.content_size
    return total


def decompress_file(source: Path, dest: Path) -> None:
    """All frames of ``source`` into ``dest``, a chunk at a time."""
    import zstandard

    try:
        with source.open("rb") as src, dest.open("wb") as out, \
                zstandard.ZstdDecompressor().stream_reader(src, read_size=CHUNK, read_across_frames=True) as reader:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
    except zstandard.ZstdError as e:
        raise ConversionError(f"cannot decompress it ({e})", file=source) from None
    except OSError as e:
        raise ConversionError(f"cannot decompress it into {dest.parent.parent}: {e.strerror}", file=source) from None


def _nearest_folder(path: Path) -> Path:
    return next(p for p in (path.absolute(), *path.absolute().parents) if p.is_dir())


@contextmanager
def opened(source: Path, opts: ConvertOptions, near: Path | None = None) -> Iterator[Checkpoint]:
    """The checkpoint at ``source``. A ``.zst`` file is decompressed first into a temporary folder in ``near``
    (or its nearest existing parent; the system's temporary folder when None), removed when the block ends;
    the checkpoint then names the .zst as its file and reads config.json and tokenizers from beside it."""
    if source.suffix != SUFFIX or not source.is_file():
        yield open_checkpoint(source, opts)
        return
    inner_name = source.name[: -len(SUFFIX)]
    if Path(inner_name).suffix not in (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        raise ConversionError("a compressed input is read by the name of what it holds (model.gguf.zst, "
                              "model.safetensors.zst, pytorch_model.bin.zst)", file=source)
    scratch = _nearest_folder(near) if near is not None else Path(tempfile.gettempdir())
    expanded = declared_size(source)
    if expanded is not None and expanded > free_bytes(scratch):
        raise ConversionError(f"its frames hold {format_bytes(expanded)}, more than the {format_bytes(free_bytes(scratch))} "
                              f"free in {scratch} to decompress it into", file=source)
    with tempfile.TemporaryDirectory(prefix=f".{source.name}.pyconv-", dir=scratch) as tmp:
        inner = Path(tmp) / inner_name
        decompress_file(source, inner)
        try:
            ck = open_checkpoint(inner, opts)
        except ConversionError as e:
            raise ConversionError(e.message, file=source if e.file == str(inner) else e.file, tensor=e.tensor) from None
        ck.path = source
        ck.files = [source if f == inner else f for f in ck.files]
        if ck.config is None and ck.model_folder is not None:  # the reader looked beside the temporary file
            ck.config = read_config(ck.model_folder)
        yield ck
