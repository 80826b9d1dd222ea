"""A tiny random llama as a Model, drawn with NumPy (no compile), and a byte tokenizer for it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.model import Model
from attractor_jax.transformer import param_shapes

CONFIG = ModelConfig(family="llama", vocab_size=64, width=16, num_layers=2, num_heads=2,
                     num_kv_heads=1, head_dim=8, mlp_width=32, max_len=256, norm_eps=1e-6,
                     tie_embeddings=True)


class ByteTokenizer:
  """Text <-> ids as bytes modulo the vocabulary; no EOS (-1 is never sampled)."""

  eos_id = -1

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str) -> list[int]:
    return [b % self.vocab_size for b in text.encode()]

  def decode(self, ids) -> str:
    return " ".join(map(str, ids))


def random_model(seed: int = 0, tokenizer: bool = False, **config) -> Model:
  """A random llama of CONFIG (fields overridden by `config`); norm scales are 1 + noise."""
  cfg = dataclasses.replace(CONFIG, **config)
  rng = np.random.default_rng(seed)
  draw = lambda path, shape: jnp.asarray(
      ("scale" in jax.tree_util.keystr(path)) + 0.3 * rng.standard_normal(shape), jnp.float32)
  params = jax.tree_util.tree_map_with_path(draw, param_shapes(cfg),
                                            is_leaf=lambda s: isinstance(s, tuple))
  return Model(config=cfg, params=params, spec="tiny",
               tokenizer=ByteTokenizer(cfg.vocab_size) if tokenizer else None)
