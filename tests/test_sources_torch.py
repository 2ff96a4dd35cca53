"""Torch zip checkpoints: every file here is written by ``torch.save`` and every expected value comes
from ``torch.load``; pyconv reads them without torch and must never run a pickle's code."""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import pyconv
from pyconv import ConversionError
from pyconv.options import ConvertOptions
from pyconv.sources import open_checkpoint

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn,
          torch.float8_e5m2]


def random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 3).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    bits = torch.iinfo(dtype).bits
    return torch.randint(0, 1 << min(bits - 1, 62), shape, generator=g, dtype=torch.int64).to(dtype)


def assert_bitwise_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype and have.shape == want.shape, name
        assert torch.equal(raw_bytes(have), raw_bytes(want)), name


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    # a fresh stride-1 copy: a one-element view may keep any stride, and byte views need stride 1
    flat = torch.empty(t.numel(), dtype=t.dtype)
    flat.copy_(t.reshape(-1))
    return flat.view(torch.uint8)


def convert(src: Path, tmp_path: Path, **options: Any) -> dict[str, torch.Tensor]:
    """pyconv's safetensors output for ``src``, written beside (not into) the source folder."""
    out = tmp_path / "out" / "out.safetensors"
    out.parent.mkdir(exist_ok=True)
    pyconv.convert(src, out, progress=False, force=True, **options)
    return load_file(out)


def loaded(path: Path) -> dict[str, torch.Tensor]:
    """torch's own reading of a state-dict file, as contiguous tensors."""
    return {k: v.contiguous() for k, v in torch.load(path, weights_only=True).items()}


def test_every_dtype_round_trips(tmp_path: Path) -> None:
    sd = {f"t.{str(d).split('.')[1]}": random_tensor((3, 5), d, i) for i, d in enumerate(DTYPES)}
    torch.save(sd, tmp_path / "model.pt")
    assert_bitwise_equal(convert(tmp_path / "model.pt", tmp_path), loaded(tmp_path / "model.pt"))


def test_views_offsets_strides_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(120, dtype=torch.float32) * 0.5
    grid = base.view(10, 12)
    sd = {
        "base": base,
        "slice": base[7:31],
        "rows": grid[2:5],
        "cols": grid[:, 3:8],
        "transposed": grid.t(),
        "stepped": base[::3],
        "expanded": base[:4].view(4, 1).expand(4, 5),
        "permuted": torch.arange(60, dtype=torch.int16).view(3, 4, 5).permute(2, 0, 1),
        "scalar": base[17],
        "empty": base[5:5],
    }
    torch.save(sd, tmp_path / "views.pt")
    assert_bitwise_equal(convert(tmp_path / "views.pt", tmp_path), loaded(tmp_path / "views.pt"))
    ck = open_checkpoint(tmp_path / "views.pt")
    # a contiguous view reads only its own bytes; a strided one keeps its strides over its span
    assert ck.tensors["rows"].strides is None and ck.tensors["rows"].nbytes == 3 * 12 * 4
    assert ck.tensors["cols"].strides == (12, 1) and ck.tensors["cols"].nbytes == (9 * 12 + 5) * 4
    assert {s.path for t in ck.tensors.values() for s in t.segments} == {tmp_path / "views.pt"}


def test_tied_weights_and_module_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(11, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 11, bias=False))
    model[2].weight = model[0].weight
    model.register_buffer("steps", torch.tensor([5, 7]))
    model.register_buffer("scratch", torch.ones(2), persistent=False)
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict) and hasattr(sd, "_metadata")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    got = convert(tmp_path, tmp_path)  # the folder: its one torch file
    assert_bitwise_equal(got, loaded(tmp_path / "pytorch_model.bin"))
    assert list(got) == ["steps", "0.weight", "1.weight", "1.bias", "2.weight"]
    ck = open_checkpoint(tmp_path / "pytorch_model.bin")
    assert ck.format_name == "torch" and ck.tensors["0.weight"].segments == ck.tensors["2.weight"].segments


def test_nanogpt_checkpoint_extra_and_prefixes(tmp_path: Path, cli: Any) -> None:
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    model_args = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32, "bias": False, "vocab_size": 50304,
                  "dropout": 0.0}
    sd = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "model_args": model_args, "iter_num": 250,
            "best_val_loss": torch.tensor(2.5), "config": {"dataset": "shakespeare_char", "compile": True}}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    ck = open_checkpoint(tmp_path / "ckpt.pt")
    assert list(ck.tensors) == ["_orig_mod.weight", "_orig_mod.bias"]
    assert ck.details() == {"model_args": model_args, "iter_num": 250, "config": ckpt["config"]}
    stripped = open_checkpoint(tmp_path / "ckpt.pt", ConvertOptions.of(strip_prefixes=("module.", "_orig_mod.")))
    assert list(stripped.tensors) == ["weight", "bias"] and stripped.tensors["weight"].name == "weight"

    out = tmp_path / "out.safetensors"
    r = cli("convert", tmp_path / "ckpt.pt", "-o", out, "-q", "--strip-prefix", "module.", "--strip-prefix", "_orig_mod.")
    assert r.returncode == 0, r.stderr
    assert_bitwise_equal(load_file(out), {k.removeprefix("_orig_mod."): v for k, v in sd.items()})
    r = cli("inspect", tmp_path / "ckpt.pt", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["extra"]["model_args"] == model_args


def test_prefix_stripping_refuses_collisions(tmp_path: Path) -> None:
    torch.save({"module.w": torch.ones(2), "w": torch.zeros(2)}, tmp_path / "m.pt")
    with pytest.raises(ConversionError, match=re.escape("'module.w' and 'w' both become 'w'")):
        open_checkpoint(tmp_path / "m.pt", ConvertOptions.of(strip_prefixes=("module.",)))


def test_sharded_bin_with_index(tmp_path: Path, cli: Any) -> None:
    shards = [{"a.weight": random_tensor((4, 3), torch.bfloat16, 1), "a.bias": random_tensor((4,), torch.float32, 2)},
              {"b.weight": random_tensor((2, 4), torch.float16, 3), "b.steps": random_tensor((3,), torch.int64, 4)}]
    weight_map = {}
    for i, sd in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save(sd, tmp_path / name)
        weight_map.update(dict.fromkeys(sd, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    expected = {k: v for sd in shards for k, v in sd.items()}
    assert_bitwise_equal(convert(tmp_path, tmp_path), expected)
    r = cli("inspect", tmp_path)
    assert r.returncode == 0 and "torch, 4 tensors" in r.stdout, r.stderr


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_random_views_match_torch(shape: list[int], data: st.DataObject) -> None:
    base = torch.arange(200, dtype=torch.float32).mul(0.25)
    n = int(torch.tensor(shape).prod())
    start = data.draw(st.integers(0, 200 - n), label="offset")
    t = base[start:start + n].view(*shape).permute(*data.draw(st.permutations(range(len(shape))), label="order"))
    dim = data.draw(st.integers(0, t.ndim - 1), label="dim")
    t = t[(slice(None),) * dim + (slice(None, None, data.draw(st.integers(1, 3), label="step")),)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.pt"
        torch.save({"v": t, "base": base}, path)
        assert_bitwise_equal(convert(path, Path(d)), loaded(path))


def test_legacy_format_gets_a_resave_hint(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ConversionError, match=r"old\.bin: legacy torch serialization .* torch\.save\(torch\.load"):
        open_checkpoint(tmp_path / "old.bin")


def rezip(src: Path, dst: Path, *, compress: int = zipfile.ZIP_STORED, replace: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compress) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)
    return dst


def test_compressed_members_and_big_endian_are_refused(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(64)}, tmp_path / "m.pt")
    rezip(tmp_path / "m.pt", tmp_path / "stored.pt")
    assert_bitwise_equal(convert(tmp_path / "stored.pt", tmp_path), {"w": torch.ones(64)})
    rezip(tmp_path / "m.pt", tmp_path / "deflated.pt", compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(ConversionError, match=r"deflated\.pt: zip member '.*data/0' is compressed"):
        open_checkpoint(tmp_path / "deflated.pt")
    rezip(tmp_path / "m.pt", tmp_path / "big.pt", replace={"/byteorder": b"big"})
    with pytest.raises(ConversionError, match="big-endian"):
        open_checkpoint(tmp_path / "big.pt")


@pytest.mark.parametrize("make, message", [
    (lambda: torch.randn(3, dtype=torch.cfloat), "complex"),
    (lambda: torch.randn(4).to_sparse(), "sparse tensors"),
    (lambda: torch.empty(3, device="meta"), "meta tensors"),
    (lambda: torch.randn(4)._neg_view(), "negative bits"),
])
def test_tensors_pyconv_cannot_express_are_refused(tmp_path: Path, make: Any, message: str) -> None:
    torch.save({"t": make()}, tmp_path / "m.pt")
    with pytest.raises(ConversionError, match=message):
        open_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize("obj, message", [
    ([torch.ones(2)], "holds a list, not a state dict"),
    ({"step": 3, "name": "x"}, "no state dict"),
    ({"a": {"w": torch.ones(1)}, "b": {"w": torch.ones(1)}}, "several state dicts"),
])
def test_files_without_one_state_dict(tmp_path: Path, obj: Any, message: str) -> None:
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(ConversionError, match=message):
        open_checkpoint(tmp_path / "m.pt")


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1000)}, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.bin").write_bytes(os.urandom(4096))
    for name in ("cut.pt", "junk.bin"):
        with pytest.raises(ConversionError, match=name):
            open_checkpoint(tmp_path / name)


# --- pickles that try to run code -----------------------------------------------------------------

class WritesMarker:
    """Unpickling this with a normal unpickler runs ``os.system`` and creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def torch_like_zip(path: Path, pickle_bytes: bytes) -> Path:
    """A file laid out like torch.save's, around hand-written pickle opcodes."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", "3\n")
    return path


def raw_payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}".encode()
    call = b"X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R"  # BINUNICODE cmd, TUPLE1, REDUCE
    code = f"open({str(marker)!r}, 'w').close()".encode()
    return {
        "GLOBAL os.system": b"\x80\x02cos\nsystem\n" + call + b".",
        "STACK_GLOBAL posix.system": b"\x80\x04\x8c\x05posix\x8c\x06system\x93" + call + b".",
        "INST os.system": b"(X" + len(cmd).to_bytes(4, "little") + cmd + b"ios\nsystem\n.",
        "builtins.exec": b"\x80\x02cbuiltins\nexec\nX" + len(code).to_bytes(4, "little") + code + b"\x85R.",
        "EXT1 registered os.system": b"\x80\x02\x82\xf0" + call + b".",
        "nested in a state dict": b"\x80\x02}X\x01\x00\x00\x00wcos\nsystem\n" + call + b"s.",
    }


def test_payload_written_by_torch_save_never_runs(tmp_path: Path, cli: Any) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "x": WritesMarker(marker)}, tmp_path / "evil.pt")
    # the payload is live: torch's full unpickler runs it
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ConversionError, match=r"evil\.pt: refused: .*'posix\.system'.* never runs code"):
        open_checkpoint(tmp_path / "evil.pt")
    r = cli("convert", tmp_path / "evil.pt", "-o", tmp_path / "out.safetensors")
    assert r.returncode == 1 and "posix.system" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("kind", list(raw_payloads(Path("x"))))
def test_hand_written_payloads_never_run(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = raw_payloads(marker)[kind]
    copyreg.add_extension("os", "system", 0xF0)
    try:
        # the payload is live: the standard unpickler runs it
        pickle.loads(payload)
        assert marker.exists(), kind
        marker.unlink()
        path = torch_like_zip(tmp_path / "evil.bin", payload)
        with pytest.raises(ConversionError, match=r"evil\.bin: refused: it (names the global .(os|posix|builtins)\.|uses a copyreg extension code)"):
            open_checkpoint(path)
    finally:
        copyreg.remove_extension("os", "system", 0xF0)
    assert not marker.exists()


def test_allowed_rebuild_helper_cannot_call_other_globals(tmp_path: Path) -> None:
    # _rebuild_from_type_v2(OrderedDict, Tensor, (), {}): an allowed helper asked to call something else
    payload = (b"\x80\x02}X\x01\x00\x00\x00wctorch._tensor\n_rebuild_from_type_v2\n"
               b"(ccollections\nOrderedDict\nctorch\nTensor\n)}tRs.")
    path = torch_like_zip(tmp_path / "odd.pt", payload)
    with pytest.raises(ConversionError, match=r"refused: .*other than a plain tensor"):
        open_checkpoint(path)


def test_pickle_cannot_rewire_the_unpicklers_own_functions(tmp_path: Path) -> None:
    # BUILD with slot state would setattr _rebuild_tensor_v2.__defaults__ for every later load
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.")
    path = torch_like_zip(tmp_path / "odd.pt", payload)
    with pytest.raises(ConversionError, match="refused: it sets attributes of function"):
        open_checkpoint(path)
