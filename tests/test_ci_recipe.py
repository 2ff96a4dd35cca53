"""examples/ci-export.yml, the GPU-free export recipe of docs/ci.md, run here: its shell steps in order on
the real SmolLM2-135M, with the checkout and Python set-up taken as done, the install step checked
against this venv instead of run again, and the upload replaced by a copy of the files it names."""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard
from packaging.requirements import Requirement

from .conftest import REPO

WORKFLOW = REPO / "examples" / "ci-export.yml"
SETUP_ACTIONS = ("actions/checkout@", "actions/setup-python@")  # what the suite's own checkout and venv already are
UPLOAD = "actions/upload-artifact@"
INSTALL_STEP = "Install pyconv and the llama.cpp runtime the validation runs"


def workflow() -> dict[str, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def steps() -> list[dict[str, Any]]:
    return list(workflow()["jobs"]["export"]["steps"])


def expand(text: str, env: dict[str, str]) -> str:
    """GitHub's ``${{ env.NAME }}`` expressions, as the runner fills them in before a step runs."""
    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env[m.group(1)], text)


def run_step(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # the runner's default shell for run steps
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_every_step_is_run_here_or_stands_for_what_the_suite_has() -> None:
    wf = workflow()
    assert wf[True]["workflow_dispatch"] is None  # PyYAML reads the key "on" as True
    assert wf["jobs"]["export"]["runs-on"] == "ubuntu-latest"
    for step in steps():
        assert "run" in step or step["uses"].startswith((*SETUP_ACTIONS, UPLOAD)), step
    assert [s.get("name") for s in steps() if "run" in s] == [INSTALL_STEP, "Convert", "Validate", "Check the fingerprints"]


def requirements(script: str, env: dict[str, str]) -> list[Requirement]:
    """The requirements a script's ``pip install`` lines name, with the workflow's variables filled in."""
    found = []
    for line in script.splitlines():
        words = shlex.split(line)
        while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value before the command
            words.pop(0)
        if words[:4] == ["python", "-m", "pip", "install"]:
            found += [Requirement(os.path.expandvars(w) if w.startswith("$") else w) for w in words[4:]
                      if not w.startswith("-")]
    return found


def test_the_install_step_installs_what_this_venv_has(monkeypatch: pytest.MonkeyPatch) -> None:
    env = workflow()["env"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    install = next(s for s in steps() if s.get("name") == INSTALL_STEP)
    wanted = requirements(install["run"], env)
    assert [r.name for r in wanted] == ["pip", "pyconv", "llama-cpp-python"]
    for req in wanted:
        have = importlib.metadata.version(req.name)
        assert req.specifier.contains(have, prereleases=True), (req, have)
        for extra in req.extras:  # pyconv[validate]: what the extra pulls in is here too
            needs = [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
            for need in needs:
                if need.marker is not None and need.marker.evaluate({"extra": extra}):
                    assert need.specifier.contains(importlib.metadata.version(need.name), prereleases=True), need


@pytest.mark.slow
def test_the_recipe_exports_smollm2(smollm2_hf: Path, tmp_path: Path) -> None:
    work = tmp_path / "runner"
    work.mkdir()
    env = {**os.environ, **workflow()["env"], "MODEL_DIR": str(smollm2_hf), "OUT_DIR": str(work / "export"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    artifacts = tmp_path / "artifacts"
    for step in steps():
        if step.get("name") == INSTALL_STEP or step.get("uses", "").startswith(SETUP_ACTIONS):
            continue
        if "run" in step:
            r = run_step(step["run"], env, work)
            assert r.returncode == 0, f"{step['name']}: {r.stdout[-2000:]} {r.stderr[-3000:]}"
            continue
        upload = step["with"]
        folder = artifacts / expand(upload["name"], env)
        folder.mkdir(parents=True)
        for pattern in expand(upload["path"], env).split():
            matched = glob.glob(pattern, root_dir=work)
            assert matched or upload["if-no-files-found"] != "error", pattern
            for path in matched:
                shutil.copy(work / path, folder)

    artifact = artifacts / "model-q8_0-gguf"
    assert sorted(p.name for p in artifact.iterdir()) == ["model.gguf.sha256", "model.gguf.zst", "model.gguf.zst.sha256",
                                                          "model.meta.json", "validation.json"]
    report = json.loads((artifact / "validation.json").read_text())
    assert report["ok"] and {c["name"]: c["status"] for c in report["checks"]}["fingerprint"] == "pass", report
    with (artifact / "model.gguf.zst").open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
        digest = hashlib.sha256(r.read()).hexdigest()
    assert (artifact / "model.gguf.sha256").read_text() == f"sha256-{digest}\n"
    meta = json.loads((artifact / "model.meta.json").read_text())
    assert meta["options"]["outtype"] == "q8_0" and meta["inputs_hashed"] is True
    weights = smollm2_hf / "model.safetensors"
    assert {s["file"]: s["sha256"] for s in meta["sources"]} == {str(weights): hashlib.sha256(weights.read_bytes()).hexdigest()}

    # the fingerprint step is a real check: a changed byte in the compressed file fails it
    packed = work / "export" / "model.gguf.zst"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 1
    packed.write_bytes(bytes(data))
    check = next(s for s in steps() if s.get("name") == "Check the fingerprints")
    assert run_step(check["run"], env, work).returncode != 0
