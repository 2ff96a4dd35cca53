"""Conversion benchmarks a user can run on their own machine (``pyconv bench``) and that the
repository's ``benchmarks/`` scripts build on: synthetic checkpoints, a timing harness reading each
command's own CPU time and peak RSS, and the jobs that put pyconv beside ``cp`` and the usual tools."""
