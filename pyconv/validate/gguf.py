"""Checks for GGUF files: readable by gguf-py, metadata complete, tensors sane, and the model runs."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np

from .. import dtypes, registry
from ..errors import ConversionError
from ..sources.base import SourceTensor
from ..sources.gguf import GgufValue, read_gguf, split_set
from .report import Report, Status
from .stats import TensorStats, tensor_stats

# Keys every llama.cpp model needs; "{arch}" is general.architecture.
REQUIRED_KEYS = ("general.architecture", "{arch}.block_count", "{arch}.context_length", "{arch}.embedding_length",
                 "{arch}.attention.head_count", "tokenizer.ggml.model", "tokenizer.ggml.tokens")
DECODER_KEYS = ("{arch}.feed_forward_length",)
NORM_RMS_BAND = (0.5, 2.0)
# projections of one layer whose RMS differ by more than this are suspect (SmolLM2-135M: at most 8.5)
PROJECTION_RMS_RATIO = 30.0
PROJECTIONS = re.compile(r"^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|attn_qkv|ffn_gate|ffn_up|ffn_down)\.weight$")
# lowest cosine between llama.cpp's token embeddings and the reference's last hidden states for an encoder; a
# q8_0 file stays above 0.999, a layout mistake falls far below
ENCODER_COSINE = 0.99


def _not_mainline(types: set[str]) -> list[str]:
    """Types mainline llama.cpp (and gguf-py) cannot load: their checks run, the runtime probe does not."""
    return sorted(t for t in types if not dtypes.row(t).mainline)


def _gguf_py_reads(files: list[Path], types: set[str], report: Report) -> None:
    unreadable = _not_mainline(types)
    if unreadable:
        report.add("container", "pass", f"parsed by pyconv's reader; gguf-py {gguf.__name__} has no type {', '.join(unreadable)}")
        return
    try:
        n = sum(len(gguf.GGUFReader(f).tensors) for f in files)
    except Exception as e:  # gguf-py raises whatever numpy/struct raise on a bad file
        report.add("container", "fail", f"gguf.GGUFReader cannot read it: {e}")
        return
    report.add("container", "pass", f"gguf.GGUFReader reads {len(files)} file(s), {n} tensors")


def _arch(kv: dict[str, GgufValue]) -> str:
    return str(kv["general.architecture"].value) if "general.architecture" in kv else "?"


def runtime_keys(arch: str) -> tuple[str, ...]:
    """Keys another runtime needs in files of GGUF architecture ``arch`` (BitNet-rs' strict mode): those its
    table writes under literal names, with the general keys that runtime requires beside them."""
    table = registry.catalog().for_gguf(arch)
    literal = table.gguf.literal_keys if table else ()
    return ("general.architecture", *literal, "general.file_type") if literal else ()


def _metadata(kv: dict[str, GgufValue], strict: bool, report: Report) -> None:
    arch = _arch(kv)
    wanted = [k.format(arch=arch) for k in (*REQUIRED_KEYS, *DECODER_KEYS, *runtime_keys(arch))]
    if arch == "bert":
        wanted = [k for k in wanted if not k.endswith("feed_forward_length")]
    missing = [k for k in wanted if k not in kv]
    if missing:
        report.add("metadata", "fail" if strict else "warn", f"missing {', '.join(missing)}", missing=missing)
    else:
        report.add("metadata", "pass", f"architecture {arch}; all {len(wanted)} required keys present")


def validate_gguf(path: Path, *, strict: bool = False, reference: Path | None = None, prompt: str = "The capital of France is",
                  probe: bool = True) -> Report:
    report = Report(str(path), "gguf")
    try:
        files = split_set(path)
        parsed = [read_gguf(f) for f in files]
    except ConversionError as e:
        report.add("container", "fail", str(e))
        return report
    kv = parsed[0].kv
    tensors = {n: t for g in parsed for n, t in g.tensors.items()}
    _gguf_py_reads(files, {t.dtype for t in tensors.values()}, report)
    _metadata(kv, strict, report)

    stats: dict[str, TensorStats] = {}
    for name, t in tensors.items():
        seg = t.segments[0]
        data = np.memmap(seg.path, dtype=np.uint8, mode="r", offset=seg.offset, shape=(seg.nbytes,))
        stats[name] = tensor_stats(data, t.dtype, t.numel)
        del data

    bad = [n for n, s in stats.items() if s.nan or s.inf]
    report.add("finite", "fail" if bad else "pass", f"NaN/Inf in {', '.join(bad[:5])}" if bad else "no NaN or Inf in any tensor",
               tensors=bad)

    norms = {n: s for n, s in stats.items() if n.endswith("_norm.weight")}
    not_f32 = [n for n in norms if tensors[n].dtype != "f32"]
    report.add("norm types", "fail" if not_f32 else "pass",
               f"norms not stored as f32: {', '.join(not_f32[:5])}" if not_f32 else f"all {len(norms)} norm weights are f32")
    lo, hi = NORM_RMS_BAND
    outside = {n: round(s.rms, 4) for n, s in norms.items() if not lo <= s.rms <= hi}
    report.add("norm rms", "warn" if outside else "pass",
               f"{len(outside)} of {len(norms)} norm weights have RMS outside [{lo}, {hi}] (real models often do; "
               f"a quantized or zeroed norm shows here), e.g. {dict(list(outside.items())[:3])}" if outside
               else f"all norm weights have RMS in [{lo}, {hi}]", outside=outside)

    by_layer: dict[int, dict[str, float]] = {}
    for n, s in stats.items():
        if m := PROJECTIONS.match(n):
            by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = s.rms
    worst = max(((max(r.values()) / max(min(r.values()), 1e-30), layer) for layer, r in by_layer.items() if r), default=(1.0, -1))
    if worst[1] >= 0:
        status: Status = "fail" if worst[0] > PROJECTION_RMS_RATIO else "pass"
        report.add("projection rms", status, f"largest max/min RMS ratio within a layer: {worst[0]:.1f} (layer {worst[1]}, "
                   f"limit {PROJECTION_RMS_RATIO:g})", layers={k: v for k, v in by_layer.items() if k == worst[1]})

    ternary = [n for n, t in tensors.items() if dtypes.is_ternary(t.dtype)]
    if ternary:
        broken = [n for n in ternary if stats[n].bad_codes]
        # one non-zero magnitude per tensor: per-block scales that differ mean weights that were not ternary
        mixed = {n: (stats[n].min_nonzero, stats[n].absmax) for n in ternary if stats[n].min_nonzero < stats[n].absmax}
        report.add("ternary", "fail" if broken or mixed else "pass",
                   f"invalid 2-bit codes in {', '.join(broken[:5])}" if broken
                   else f"more than one magnitude in {', '.join(list(mixed)[:5])}" if mixed
                   else f"{len(ternary)} ternary tensors decode to {{-s, 0, +s}}", mixed=mixed)

    fingerprint = path.with_name(path.name + ".sha256")
    if fingerprint.exists():
        from ..fingerprint import sha256_file

        want = fingerprint.read_text().strip()
        got = f"sha256-{sha256_file(path)}"
        report.add("fingerprint", "pass" if got == want else "fail", "matches its .sha256 sidecar" if got == want
                   else f"file is {got}, sidecar says {want}")

    not_mainline = _not_mainline({t.dtype for t in tensors.values()})
    causal = kv.get(gguf.Keys.Attention.CAUSAL.format(arch=_arch(kv)))
    encoder = causal is not None and not causal.value
    if not probe:
        report.add("runtime", "skip", "probe disabled (--no-probe)")
    elif not_mainline:
        report.add("runtime", "skip", f"mainline llama.cpp has no {', '.join(not_mainline).upper()} kernels")
    else:
        _runtime(path, prompt, reference, report, encoder=encoder, bits=bits_per_weight(tensors))
    return report


# The share of prompt positions whose top token must agree with transformers': files that keep 8 or more
# bits per weight move logits by little; below that (Q4_K_M, Q3_K, ...) rounding flips close top tokens
# of small models, so agreement is held to a lower bar.
TOP1_AGREEMENT = 0.9
TOP1_AGREEMENT_BELOW_8_BITS = 0.6


def bits_per_weight(tensors: dict[str, SourceTensor]) -> float:
    """Mean bits per element of the matrices (the tensors quantization touches)."""
    matrices = [t for t in tensors.values() if len(t.shape) >= 2]
    elements = sum(t.numel for t in matrices)
    return 8 * sum(dtypes.nbytes_of_elements(t.dtype, t.numel) for t in matrices) / elements if elements else 32.0


def _runtime(path: Path, prompt: str, reference: Path | None, report: Report, *, encoder: bool, bits: float = 32.0) -> None:
    from .runtime import load_llama

    try:
        model = load_llama(path, embedding=encoder)
    except Exception as e:  # llama.cpp reports load failures as ValueError/RuntimeError with its own text
        report.add("runtime", "fail", f"llama.cpp cannot load it: {e}")
        return
    try:
        if encoder:
            _encoder_probe(model, prompt, reference, report)
        else:
            _probe(model, prompt, reference, report, TOP1_AGREEMENT if bits >= 8 else TOP1_AGREEMENT_BELOW_8_BITS)
    finally:
        model.close()


def _encoder_probe(model: object, prompt: str, reference: Path | None, report: Report) -> None:
    """An encoder generates nothing: llama.cpp's token embeddings of the prompt must be finite and differ
    between tokens, and equal the reference's last hidden states in direction."""
    from .runtime import hf_hidden_states

    ids = model.tokenize(prompt.encode())  # type: ignore[attr-defined]  # as embed() tokenizes
    ours = np.asarray(model.embed(prompt, normalize=False), dtype=np.float32)  # type: ignore[attr-defined]
    finite = bool(np.isfinite(ours).all())
    varied = finite and len(ids) > 1 and float(np.ptp(ours, axis=0).max()) > 0
    report.add("runtime", "pass" if varied else "fail",
               f"llama.cpp encodes {prompt!r} ({len(ids)} tokens) into {ours.shape[-1]}-d token embeddings that are "
               + ("finite and differ between tokens" if varied else "not finite" if not finite else "all alike"))
    if reference is None or not varied:
        return
    ref = hf_hidden_states(reference, ids)
    cosines = (ours * ref).sum(-1) / np.maximum(np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1), 1e-30)
    lowest, diff = float(cosines.min()), float(np.abs(ours - ref).max())
    report.add("reference", "pass" if lowest >= ENCODER_COSINE else "fail",
               f"token embeddings against transformers' last hidden states: lowest cosine {lowest:.4f} over {len(ids)} "
               f"tokens (at least {ENCODER_COSINE}); max |Δ| {diff:.3g}", lowest_cosine=lowest, max_abs_diff=diff)


def _probe(model: object, prompt: str, reference: Path | None, report: Report, needed: float) -> None:
    from .runtime import greedy_text, hf_logits, llama_logits, recognizable

    text, _ids = greedy_text(model, prompt, 16)
    ok, common = recognizable(text)
    report.add("runtime", "pass" if ok else "fail", f"llama.cpp continues {prompt!r} with {text!r}"
               + ("" if ok else " (no recognizable words)"), continuation=text, common_words=common)
    if reference is None:
        return
    ids = model.tokenize(prompt.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    ours = llama_logits(model, ids)
    ref = hf_logits(reference, ids)
    agree = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    diff = float(np.abs(ours - ref).max())
    report.add("reference", "pass" if agree >= needed else "fail",
               f"top token agrees with transformers at {agree:.0%} of {len(ids)} positions (at least {needed:.0%} for this "
               f"file's bits per weight); max |Δlogit| {diff:.3g}",
               top1_agreement=agree, max_abs_diff=diff)
