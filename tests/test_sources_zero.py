"""DeepSpeed ZeRO checkpoints made by DeepSpeed itself on CPU (tests/zero_fixtures/make_checkpoints.py).

Each run's references come from the training process, not from the checkpoint files: the module's
state dict (gathered at stage 3) and the fp32 master weights read from the live optimizer. DeepSpeed's
own ``zero_to_fp32`` output is the second reference wherever it is right.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import pyconv
from pyconv import ConversionError
from pyconv.options import ConvertOptions
from pyconv.sources import open_checkpoint
from pyconv.sources.zero import ZeroCheckpoint

from .test_sources_torch import WritesMarker, assert_bitwise_equal

GENERATOR = Path(__file__).parent / "zero_fixtures" / "make_checkpoints.py"
TWO_GROUPS = {"groups": 2}
RUNS: dict[str, dict[str, Any]] = {
    # world size 2
    "s1_bf16_align_ws2": {"ws": 2, "stage": 1, "dtype": "bf16", "model": "toy", **TWO_GROUPS,
                          "zero": {"parameter_alignment": True}},
    "s2_bf16_roundrobin_ws2": {"ws": 2, "stage": 2, "dtype": "bf16", "model": "toy", **TWO_GROUPS,
                               "zero": {"round_robin_gradients": True}},
    "s3_bf16_subgroups_ws2": {"ws": 2, "stage": 3, "dtype": "bf16", "model": "toy", **TWO_GROUPS,
                              "zero": {"sub_group_size": 40, "stage3_param_persistence_threshold": 0}},
    "bf16_optimizer_ws2": {"ws": 2, "stage": 1, "dtype": "bf16", "model": "toy", "grad_accum_dtype": "fp32"},
    "gpt2_s2_bf16_ws2": {"ws": 2, "stage": 2, "dtype": "bf16", "model": "gpt2"},
    "llama_s3_bf16_ws2": {"ws": 2, "stage": 3, "dtype": "bf16", "model": "llama",
                          "zero": {"stage3_param_persistence_threshold": 0}},
    # world size 1
    "s1_fp32_ws1": {"ws": 1, "stage": 1, "dtype": "fp32", "model": "toy"},
    "s2_fp16_ws1": {"ws": 1, "stage": 2, "dtype": "fp16", "model": "toy", **TWO_GROUPS},
    "s2_bf16_align_ws1": {"ws": 1, "stage": 2, "dtype": "bf16", "model": "toy", "zero": {"parameter_alignment": True}},
    "s3_fp32_ws1": {"ws": 1, "stage": 3, "dtype": "fp32", "model": "toy"},
}
STAGE_12 = [n for n, r in RUNS.items() if r["stage"] < 3]
STAGE_3 = [n for n, r in RUNS.items() if r["stage"] == 3]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(ws: int, out: Path) -> subprocess.Popen[bytes]:
    runs = [json.dumps({"name": n, **{k: v for k, v in r.items() if k != "ws"}}) for n, r in RUNS.items() if r["ws"] == ws]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    port = str(free_port())
    if ws == 1:  # no launcher: the environment a launcher would give rank 0
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        cmd = [sys.executable, str(GENERATOR)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ws}", "--master_port", port, str(GENERATOR)]
    with (out / f"ws{ws}.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([*cmd, "--out", str(out), *runs], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def zero_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every run of RUNS trained and saved by DeepSpeed: both world sizes at once, once per session
    (the first run on a machine also compiles DeepSpeed's CPU communication op, about a minute)."""
    out = tmp_path_factory.mktemp("zero")
    procs = {ws: launch(ws, out) for ws in (1, 2)}
    for ws, proc in procs.items():
        if proc.wait(timeout=900) != 0:
            tail = (out / f"ws{ws}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"DeepSpeed world-size-{ws} generator failed:\n{tail}")
    return {name: out / name for name in RUNS}


class Reference:
    """What the training process recorded about one run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ckpt = folder / "ckpt"
        self.meta = json.loads((folder / "meta.json").read_text())
        self.module = load_file(folder / "module_state.safetensors")
        self.master = load_file(folder / "master.safetensors")
        z2f = folder / "zero_to_fp32.safetensors"
        self.zero_to_fp32 = load_file(z2f) if z2f.exists() else None

    def expected(self, weights: str) -> dict[str, torch.Tensor]:
        """The state dict under every name: trainable parameters (and their tied aliases) from the
        fp32 master copy or the module, everything else (frozen, buffers) from the module."""
        out = {}
        for name in self.meta["state_names"]:
            source = self.meta["tied"].get(name, name)
            out[name] = self.master[source] if weights == "master" and source in self.master else self.module[name]
        return out


@pytest.fixture(scope="session")
def references(zero_runs: dict[str, Path]) -> dict[str, Reference]:
    return {name: Reference(folder) for name, folder in zero_runs.items()}


def convert(src: Path, out: Path, **options: Any) -> dict[str, torch.Tensor]:
    pyconv.convert(src, out, progress=False, **options)
    return load_file(out)


@pytest.mark.parametrize("run", list(RUNS))
def test_master_weights_equal_the_trained_state(references: dict[str, Reference], run: str, tmp_path: Path) -> None:
    ref = references[run]
    got = convert(ref.ckpt, tmp_path / "out.safetensors")
    expected = ref.expected("master")
    assert_bitwise_equal({n: got[n] for n in expected}, expected)
    assert set(got) == set(expected)
    ck = open_checkpoint(ref.ckpt)
    assert list(ck.tensors) == ref.meta["state_names"]  # the module's own order
    assert isinstance(ck, ZeroCheckpoint) and ck.stage == RUNS[run]["stage"] and ck.world_size == RUNS[run]["ws"]


@pytest.mark.parametrize("run", STAGE_12)
def test_module_weights_equal_the_module_state(references: dict[str, Reference], run: str, tmp_path: Path, cli: Any) -> None:
    ref = references[run]
    out = tmp_path / "module.safetensors"
    r = cli("convert", ref.ckpt, "-o", out, "--to", "safetensors", "-q", "--zero-weights", "module")
    assert r.returncode == 0, r.stderr
    got = load_file(out)
    expected = {n: ref.module[n] for n in ref.meta["state_names"]}
    assert_bitwise_equal({n: got[n] for n in expected}, expected)
    assert set(got) == set(expected)


@pytest.mark.parametrize("run", STAGE_3)
def test_module_weights_are_refused_at_stage_3(references: dict[str, Reference], run: str, tmp_path: Path, cli: Any) -> None:
    r = cli("convert", references[run].ckpt, "-o", tmp_path / "m.safetensors", "--zero-weights", "module")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "global_step3: --zero-weights module: a stage-3 checkpoint keeps no full module copy" in r.stderr


@pytest.mark.parametrize("run", list(RUNS))
def test_agrees_with_zero_to_fp32_where_it_is_right(references: dict[str, Reference], run: str, tmp_path: Path) -> None:
    ref = references[run]
    got = convert(ref.ckpt, tmp_path / "out.safetensors")
    if RUNS[run].get("grad_accum_dtype"):
        # zero_to_fp32 rejects BF16_Optimizer checkpoints, whose data pyconv rebuilds exactly
        assert ref.zero_to_fp32 is None and "is not a zero checkpoint" in ref.meta["zero_to_fp32_error"]
        return
    assert ref.zero_to_fp32 is not None, ref.meta["zero_to_fp32_error"]
    theirs = ref.zero_to_fp32
    # in memory zero_to_fp32 keeps frozen parameters in the training dtype too (its CLI widens them on writing)
    assert_bitwise_equal({n: got[n] for n in theirs}, theirs)
    dropped = set(got) - set(theirs)
    if RUNS[run]["stage"] == 1 and RUNS[run]["model"] == "toy":
        # zero_to_fp32 silently drops stage-1 frozen parameters; pyconv has them
        assert dropped == set(ref.meta["frozen"]) and dropped
    else:
        assert dropped == set()


def test_toy_model_keeps_dtypes_ties_and_buffers(references: dict[str, Reference], tmp_path: Path) -> None:
    ref = references["s3_bf16_subgroups_ws2"]
    got = convert(ref.ckpt, tmp_path / "out.safetensors")
    assert got["embed.weight"].dtype == torch.float32 and torch.equal(got["head.weight"], got["embed.weight"])
    assert {got[n].dtype for n in ref.meta["frozen"]} == {torch.bfloat16}
    assert got["counts"].dtype == torch.int64 and got["counts"].tolist() == [3, 1, 4, 1, 5]
    assert got["scale"].dtype == ref.module["scale"].dtype
    assert "scratch" not in got  # a non-persistent buffer is not part of the state
    assert ref.meta["frozen"] == ["frozen_scale", "frozen.weight", "frozen.bias"] and ref.meta["tied"] == {"head.weight": "embed.weight"}


def test_round_robin_reference_is_not_deepspeeds_accessor(references: dict[str, Reference]) -> None:
    # the run where DeepSpeed's own safe_get_full_fp32_param is wrong; pyconv matched the flat buffers
    assert any("safe_get_full_fp32_param is wrong" in n for n in references["s2_bf16_roundrobin_ws2"].meta["notes"])


def test_parameters_are_segments_across_rank_files(references: dict[str, Reference]) -> None:
    for run in ("s1_bf16_align_ws2", "s3_bf16_subgroups_ws2"):
        ck = open_checkpoint(references[run].ckpt)
        optim = {p for p in ck.files if p.name.endswith("_optim_states.pt")}
        assert len(optim) == 2 and set(ck.tensors["embed.weight"].files) == optim
        assert ck.tensors["embed.weight"].nbytes == 444 * 4


def test_inspect_and_hf_config(references: dict[str, Reference], cli: Any) -> None:
    ref = references["llama_s3_bf16_ws2"]
    r = cli("inspect", ref.ckpt / "global_step3", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "zero" and info["extra"]["zero_stage"] == 3 and info["extra"]["tag"] == "global_step3"
    assert info["config"]["model_type"] == "llama" and info["tensor_count"] == len(ref.meta["state_names"])
    assert {t["dtype"] for t in info["tensors"]} == {"f32"}


def copy_checkpoint(ref: Reference, dst: Path) -> Path:
    shutil.copytree(ref.ckpt, dst)
    return dst / "global_step3"


def test_folder_forms(references: dict[str, Reference], tmp_path: Path) -> None:
    ref = references["s2_bf16_roundrobin_ws2"]
    tag = copy_checkpoint(ref, tmp_path / "run")
    expected = ref.expected("master")
    (tmp_path / "run" / "latest").unlink()  # one tag folder and no 'latest'
    assert_bitwise_equal(convert(tmp_path / "run", tmp_path / "a.safetensors"), expected)
    assert_bitwise_equal(convert(tag, tmp_path / "b.safetensors"), expected)
    shutil.copytree(tag, tmp_path / "run" / "global_step6")
    with pytest.raises(ConversionError, match=r"several checkpoints .*global_step3, global_step6.* and no 'latest'"):
        open_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "latest").write_text("global_step9")
    with pytest.raises(ConversionError, match="'latest' names 'global_step9', which is not a folder"):
        open_checkpoint(tmp_path / "run")


def test_hf_trainer_folder_reads_the_deepspeed_checkpoint(references: dict[str, Reference], tmp_path: Path, cli: Any) -> None:
    # HF Trainer's checkpoint-N: model.safetensors beside latest and global_stepN, here with a second
    # safetensors file sharing its tensors, which must never be merged with it
    ref = references["s2_bf16_roundrobin_ws2"]
    run = tmp_path / "checkpoint-3"
    copy_checkpoint(ref, run)
    save_file(ref.module, run / "model.safetensors")
    save_file({"head.weight": ref.module["head.weight"]}, run / "reference.safetensors")
    assert_bitwise_equal(convert(run, tmp_path / "a.safetensors"), ref.expected("master"))
    r = cli("convert", run, "-o", tmp_path / "b.safetensors", "-q", "--source", "safetensors")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "'model.safetensors' and 'reference.safetensors' both hold this tensor and there is no index" in r.stderr
    (run / "reference.safetensors").unlink()
    r = cli("convert", run, "-o", tmp_path / "b.safetensors", "-q", "--source", "safetensors")
    assert r.returncode == 0, r.stderr
    assert_bitwise_equal(load_file(tmp_path / "b.safetensors"), ref.module)
    # a broken DeepSpeed checkpoint: the error says what else is there and how to read it
    (run / "latest").write_text("global_step9")
    r = cli("convert", run, "-o", tmp_path / "c.safetensors", "-q")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert (f"{run / 'latest'}: 'latest' names 'global_step9', which is not a folder here (read as zero; this folder also "
            "holds safetensors: pick one with --source zero|safetensors)") in r.stderr


@pytest.mark.parametrize("damage, message", [
    ("drop rank 1", "partition_count says 2 ranks, the folder has 1"),
    ("rank 1 from another run", "param_shapes need 436 fp32 elements per rank, this rank saved"),
    ("tensor parallel", "tensor-parallel ZeRO checkpoints are not supported"),
    ("stage 0", "stage-0 .not ZeRO."),
    ("payload", r"refused: it names the global 'posix\.system'"),
])
def test_inconsistent_checkpoints_fail_clearly(references: dict[str, Reference], tmp_path: Path, damage: str, message: str) -> None:
    tag = copy_checkpoint(references["s3_bf16_subgroups_ws2"], tmp_path / "run")
    rank1 = tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    marker = tmp_path / "pwned"
    if damage == "drop rank 1":
        rank1.unlink()
    elif damage == "rank 1 from another run":
        shutil.copy(references["llama_s3_bf16_ws2"].ckpt / "global_step3" / rank1.name, rank1)
    elif damage == "tensor parallel":
        rank1.rename(tag / "bf16_zero_pp_rank_0_mp_rank_01_optim_states.pt")
    elif damage == "stage 0":
        for p in tag.glob("*optim_states.pt"):
            p.unlink()
    else:
        torch.save({"optimizer_state_dict": WritesMarker(marker)}, rank1)
    with pytest.raises(ConversionError, match=message):
        open_checkpoint(tmp_path / "run")
    assert not marker.exists()


def test_converts_without_torch_or_deepspeed(references: dict[str, Reference], tmp_path: Path) -> None:
    ref = references["s2_bf16_roundrobin_ws2"]
    out = tmp_path / "out.safetensors"
    code = ("import sys; sys.modules['torch'] = sys.modules['deepspeed'] = None\n"
            "import pyconv; pyconv.convert(sys.argv[1], sys.argv[2], progress=False)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed') and sys.modules[m]))")
    r = subprocess.run([sys.executable, "-c", code, str(ref.ckpt), str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    got, expected = load_file(out), ref.expected("master")
    assert_bitwise_equal({n: got[n] for n in expected}, expected)


def test_options_are_checked(references: dict[str, Reference]) -> None:
    with pytest.raises(ConversionError, match="zero_weights must be one of master, module"):
        open_checkpoint(references["s1_fp32_ws1"].ckpt, ConvertOptions.of(zero_weights="fp32"))
