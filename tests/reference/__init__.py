"""Independent training-side forward passes and HF-folder helpers for the remote-code tests.

The forward passes here are written from the description of the trainers' models in
docs/custom-models.md, as plain tensor arithmetic over a state dict, never by importing pyconv's
remote code, so the exported modeling files are checked against something else.
"""
