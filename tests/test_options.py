"""Options: the command line and the Python API build the same ``ConvertOptions`` from the per-part
dataclasses, every flag keeps its spelling, and ``pyconv.convert`` takes the flat keyword names."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import pyconv
from pyconv.cli import build_parser, options_from
from pyconv.options import PART_OF, ConvertOptions

# llama-quantize's options, spelled as it spells them
MIX_FLAGS = ("--pure", "--output-tensor-type", "--token-embedding-type", "--tensor-type", "--leave-output-tensor", "--imatrix")
# every flag of the two commands that convert, as pyconv has spelled them since before the options split
CONVERT_FLAGS = {
    "-h", "--help", "-o", "--output", "--to", "--outtype", "--threads", "--max-shard-size", "--dry-run", "--force",
    "--chunk-size", "-q", "--quiet", "--strip-prefix", "--zero-weights", "--dcp-key", "--source", "--arch", "--include-pytorch-bin",
    "--allow-decoder-bias-drop", "--vocab-size", "--layout", "--tp-size", "--step", "--tokenizer", "--tokenizer-pre",
    "--split-max-size", "--split-max-tensors", "--name", "--no-fingerprint", "--hash-inputs", "--ternarize", "--keep-float",
    "--compress", "--compress-only", "--base", "--merge-lora", *MIX_FLAGS,
}
QUANTIZE_FLAGS = {
    "-h", "--help", "-o", "--output", "--outtype", "--allow-requantize", "--threads", "--dry-run", "--force", "-q",
    "--quiet", "--ternarize", "--keep-float", "--compress", "--compress-only", "--hash-inputs", *MIX_FLAGS,
}


def command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize(("name", "flags"), [("convert", CONVERT_FLAGS), ("quantize", QUANTIZE_FLAGS)])
def test_every_flag_keeps_its_spelling(name: str, flags: set[str]) -> None:
    assert {s for a in command(name)._actions for s in a.option_strings} == flags


def test_the_command_line_defaults_are_the_apis() -> None:
    assert options_from(build_parser().parse_args(["convert", "src"])) == ConvertOptions()


def test_flags_and_keywords_make_the_same_options() -> None:
    args = build_parser().parse_args(["convert", "src", "--outtype", "Q8_0", "--strip-prefix", "a.", "--strip-prefix", "b.",
                                      "-q", "--no-fingerprint", "--tp-size", "2", "--chunk-size", "1MiB", "--name", "m",
                                      "--keep-float", "norm", "--compress", "zstd", "--tokenizer", "tok.json"])
    assert options_from(args) == ConvertOptions.of(
        outtype="q8_0", strip_prefixes=("a.", "b."), progress=False, fingerprint=False, tp_size=2, chunk_bytes=1 << 20,
        model_name="m", keep_float=("norm",), compress="zstd", tokenizer="tok.json")
    quantize = build_parser().parse_args(["quantize", "in.gguf", "-o", "out.gguf", "--outtype", "i2_s"])
    assert options_from(quantize, to="gguf") == ConvertOptions.of(to="gguf", outtype="i2_s", allow_requantize=False)


def test_flat_names_reach_their_parts() -> None:
    opts = ConvertOptions.of(outtype="f16", zero_weights="module", vocab_size=64, layout="hf", split_max_tensors=3,
                             ternarize="absmean", compress_only=True)
    assert (opts.common.outtype, opts.source.zero_weights, opts.hf.vocab_size, opts.native.layout,
            opts.gguf.split_max_tensors, opts.quant.ternarize, opts.compression.compress_only) == \
        ("f16", "module", 64, "hf", 3, "absmean", True)
    assert list(opts.flat()) == list(PART_OF) and opts.flat()["vocab_size"] == 64


def test_an_unknown_keyword_is_a_type_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'outtyp'"):
        pyconv.convert(tmp_path, tmp_path / "out.gguf", outtyp="q8_0")
