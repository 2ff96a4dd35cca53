"""Model families as declarative tables (see ``arch.Arch``), the types a family's package and a plugin's
``pyconv.archs`` entry point build them from."""

from .arch import Arch
from .config import Config
from .gguf_layout import ExpertStack, Fuse, GgufLayout, Requires, Split
from .hf_layout import HfLayout, HfName, TensorFlag
from .hparams import COMMON_HPARAMS, HParam
from .llama_like import llama_like
from .native_layout import NativeLayout, Regroup, regroup
from .proof import Proof

__all__ = ["COMMON_HPARAMS", "Arch", "Config", "ExpertStack", "Fuse", "GgufLayout", "HParam", "HfLayout", "HfName",
           "NativeLayout", "Proof", "Regroup", "Requires", "Split", "TensorFlag", "llama_like", "regroup"]
