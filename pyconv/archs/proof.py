"""What the test suite shows of a table, as data: ``pyconv archs`` lists it and the family tests run what it
claims (the GGUF out types llama.cpp is checked at, and whether the GGUF → HF way is)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Proof:
    # GGUF out types whose files llama.cpp runs in the tests, compared with ``against``
    outtypes: tuple[str, ...] = ()
    against: str = "transformers' logits"
    # what the HF folder pyconv makes of its own GGUF is compared with; "" when nothing is
    to_hf: str = ""
    # the test modules holding the proof
    tests: tuple[str, ...] = ()

    @property
    def proven(self) -> bool:
        return bool(self.outtypes or self.to_hf)


UNPROVEN = Proof()

# where the proofs of the families pyconv had before the family harness live
LOGITS_TESTS = "tests/test_archs_gguf.py"
BACK_TO_HF_TESTS = "tests/test_targets_hf.py"
SAME_AS_SOURCE = "the source's logits exactly"
SAME_AS_SOURCE_AND_LOADER = "the source's logits exactly, and transformers' GGUF loader's"

# the family harness's proofs (tests/family_harness.py)
FAMILY_TESTS = "tests/test_families.py"
LOADS_BACK = "the source's logits, loaded with no missing or unexpected keys"
LOADS_BACK_AND_LOADER = LOADS_BACK + ", and transformers' GGUF loader's"
