"""pyconv's version, for the modules that write it into what they make."""

__version__ = "0.1.0"
