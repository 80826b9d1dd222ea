"""Weight loaders: GGUF, local HF safetensors directories, and the HF hub."""
