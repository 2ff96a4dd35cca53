"""The repository's benchmark runs at model scale (scale.py) and against DeepSpeed (zero.py); the
per-job benchmark is ``pyconv bench`` (pyconv/bench), which ``make bench`` runs on bench-data/."""
