"""Model families as declarative tables (see ``base.Arch``)."""

from .base import ARCHS, Arch, Config, HParam, detect_arch

__all__ = ["ARCHS", "Arch", "Config", "HParam", "detect_arch"]
