"""Output formats (``formats.py`` lists them): GGUF, safetensors, Hugging Face folders, trainer checkpoints."""
