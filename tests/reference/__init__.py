"""Independent training-side forward passes and HF-folder helpers for the remote-code tests.

The forward passes here are written from the spec's description of the trainers' models
(``../shared/specs/hf-custom.md``), as plain tensor arithmetic over a state dict, never by importing
pyconv's remote code, so the exported modeling files are checked against something else.
"""
