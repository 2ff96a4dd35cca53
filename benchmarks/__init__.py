"""Throughput and peak-RSS benchmarks; run with ``make bench`` or ``python -m benchmarks.run``."""
