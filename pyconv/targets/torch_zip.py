"""``pytorch_model.bin`` written by the engine: a torch zip archive laid out here, filled by streaming.

``torch.save`` writes a zip of stored (uncompressed) members: ``<archive>/data.pkl`` (the state dict's
structure, a pickle naming one storage per tensor), ``<archive>/data/<key>`` (each storage's raw bytes,
64-byte aligned), and small records (``byteorder``, ``version``, ...). Python lays out every header and
the pickle with each tensor's offset, so the engine writes tensors straight to their place like any
other container. A zip also records each member's CRC-32, which is only known once the bytes exist:
``torch.load`` never checks it, Python's ``zipfile`` does, so ``seal`` fills the CRCs in after the
engine ran, reading the file back in blocks.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..plan import OutFile, OutTensor
from ..sources.torch_pickle import STORAGE_TYPES

ALIGNMENT = 64                  # where torch.save puts storage bytes (its .storage_alignment record)
ZIP64_LIMIT = 0xFFFFFFFF        # sizes and offsets from here on need zip64 records
STORAGE_CLASSES = {dtype: name for name, dtype in STORAGE_TYPES.items()}
READ_BLOCK = 16 << 20

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_DOS_DATE = 0x21                # 1980-01-01, the zip epoch
_PADDING_ID = 0x4246            # "FB": the extra field torch pads with
_ZIP64_ID = 0x0001


def _int(n: int) -> bytes:
    if 0 <= n < 0x100:
        return b"K" + bytes([n])
    if 0 <= n < 0x10000:
        return b"M" + struct.pack("<H", n)
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _tuple(items: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(i) for i in items) + b"t" if items else b")"


_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"


def state_dict_pickle(tensors: list[OutTensor]) -> bytes:
    """Protocol-2 pickle of an OrderedDict {name: tensor over storage str(i)}, as torch.save spells it,
    written opcode by opcode (pickling would need torch's own classes)."""
    out = [b"\x80\x02", _ORDERED_DICT, b"("]
    for key, t in enumerate(tensors):
        storage = STORAGE_CLASSES[t.dtype]
        strides = tuple(_row_major(t.shape))
        out += [_str(t.name), b"ctorch._utils\n_rebuild_tensor_v2\n(",
                b"(", _str("storage"), f"ctorch\n{storage}\n".encode(), _str(str(key)), _str("cpu"), _int(t.numel),
                b"tQ", _int(0), _tuple(t.shape), _tuple(strides), b"\x89", _ORDERED_DICT, b"tR"]
    out.append(b"u.")
    return b"".join(out)


def _row_major(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return strides[::-1]


@dataclass
class _Member:
    name: str
    offset: int  # of its local header
    size: int
    crc: int


def _local_header(name: bytes, size: int, crc: int, data_at: int) -> bytes:
    """The local header whose end (extra field padded with 'Z') lands the data on ``ALIGNMENT``."""
    big = size >= ZIP64_LIMIT
    zip64 = struct.pack("<HHQQ", _ZIP64_ID, 16, size, size) if big else b""
    fixed = _LOCAL.size + len(name) + len(zip64)
    pad = (-(data_at + fixed + 4)) % ALIGNMENT
    extra = zip64 + struct.pack("<HH", _PADDING_ID, pad) + b"Z" * pad
    small = 0xFFFFFFFF if big else size
    return _LOCAL.pack(0x04034B50, 45 if big else 20, 0, 0, 0, _DOS_DATE, crc, small, small, len(name), len(extra)) + name + extra


def _central_entry(m: _Member) -> bytes:
    name = m.name.encode()
    fields = [m.size, m.size] if m.size >= ZIP64_LIMIT else []
    if m.offset >= ZIP64_LIMIT:
        fields.append(m.offset)
    extra = struct.pack(f"<HH{len(fields)}Q", _ZIP64_ID, 8 * len(fields), *fields) if fields else b""
    size = 0xFFFFFFFF if m.size >= ZIP64_LIMIT else m.size
    offset = 0xFFFFFFFF if m.offset >= ZIP64_LIMIT else m.offset
    version = 45 if fields else 20
    return _CENTRAL.pack(0x02014B50, version, version, 0, 0, 0, _DOS_DATE, m.crc, size, size, len(name), len(extra),
                         0, 0, 0, 0, offset) + name + extra


def _end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    end = cd_offset + cd_size
    if count < 0xFFFF and cd_offset < ZIP64_LIMIT and cd_size < ZIP64_LIMIT:
        return _EOCD.pack(0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0)
    return (_EOCD64.pack(0x06064B50, _EOCD64.size - 12, 45, 45, 0, 0, count, count, cd_size, cd_offset)
            + _LOCATOR64.pack(0x07064B50, 0, end, 1)
            + _EOCD.pack(0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def torch_zip_file(name: str, tensors: list[OutTensor], file_index: int) -> OutFile:
    """A raw OutFile holding ``tensors`` (which get their offsets and ``file``) as a torch.save archive."""
    archive = Path(name).stem
    records = [(f"{archive}/data.pkl", state_dict_pickle(tensors)), (f"{archive}/.format_version", b"1"),
               (f"{archive}/.storage_alignment", str(ALIGNMENT).encode()), (f"{archive}/byteorder", b"little")]
    members: list[_Member] = []
    at = 0
    blobs: list[tuple[int, bytes]] = []

    def add(member_name: str, size: int, data: bytes | None) -> int:
        nonlocal at
        crc = zlib.crc32(data) if data is not None else 0
        header = _local_header(member_name.encode(), size, crc, at)
        members.append(_Member(member_name, at, size, crc))
        blobs.append((at, header + (data or b"")))
        data_at = at + len(header)
        at = data_at + size
        return data_at

    for member_name, data in records:
        add(member_name, len(data), data)
    for key, t in enumerate(tensors):
        t.offset = add(f"{archive}/data/{key}", t.nbytes, None)
        t.file = file_index
    add(f"{archive}/version", 2, b"3\n")
    tail = b"".join(_central_entry(m) for m in members)
    tail += _end_records(len(members), at, len(tail))
    blobs.append((at, tail))
    return OutFile(name, "raw", size=at + len(tail), blobs=blobs)


def seal(path: Path) -> None:
    """Write the CRC-32 of every member whose recorded CRC is not yet its data's, in the local header and
    in the central directory. Reads the members back in blocks; no tensor is held whole."""
    with path.open("r+b") as f:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
        entry_at = archive.start_dir
        fd = f.fileno()
        for info in infos:
            head = os.pread(fd, _LOCAL.size, info.header_offset)
            name_len, extra_len = struct.unpack_from("<HH", head, 26)
            start = info.header_offset + _LOCAL.size + name_len + extra_len
            crc, done = 0, 0
            while done < info.file_size:
                block = os.pread(fd, min(READ_BLOCK, info.file_size - done), start + done)
                crc = zlib.crc32(block, crc)
                done += len(block)
            if crc != info.CRC:
                os.pwrite(fd, struct.pack("<I", crc), info.header_offset + 14)
                os.pwrite(fd, struct.pack("<I", crc), entry_at + 16)
            entry_at += _CENTRAL.size + len(info.filename.encode()) + len(info.extra) + len(info.comment)
        os.fsync(fd)
