"""Loads a local HF model directory: config.json + *.safetensors (config.HF_MODEL_TYPES)."""

from __future__ import annotations

import pathlib

import numpy as np
import safetensors.numpy

from attractor_jax import config as config_lib
from attractor_jax.errors import InputError
from attractor_jax.weights.convert import to_params


def load_hf_dir(path: str | pathlib.Path):
  """Returns (ModelConfig, params) for a directory written by `save_pretrained`."""
  import transformers  # heavy import, only for this path

  path = pathlib.Path(path)
  if not (path / "config.json").is_file():
    raise InputError(f"{path} has no config.json: pass an HF model directory, a .gguf file, "
                     "or 'smollm2-135m'")
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise InputError(f"{path} has no *.safetensors weights: save the model with "
                     "save_pretrained(..., safe_serialization=True)")
  hf_config = transformers.AutoConfig.from_pretrained(path)
  cfg = config_lib.from_hf_config(hf_config, name=str(path))
  tensors: dict[str, np.ndarray] = {}
  for f in files:
    tensors.update(safetensors.numpy.load_file(f))
  tensors = {_strip_prefix(k): v for k, v in tensors.items()}
  if cfg.family != "gpt2" and cfg.tie_embeddings:
    tensors.pop("lm_head.weight", None)
  return cfg, to_params(tensors.__getitem__, cfg, str(path))


def _strip_prefix(name: str) -> str:
  """gpt2 checkpoints name tensors with or without 'transformer.'."""
  return name.removeprefix("transformer.")
