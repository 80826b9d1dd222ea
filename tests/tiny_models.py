"""Every tiny model the tests use: random JAX models (NumPy draws, no compile) with a byte
tokenizer, and random HF models written with save_pretrained (torch imported only there)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.model import Model
from attractor_jax.transformer import abstract_params

CONFIG = ModelConfig(family="llama", vocab_size=64, width=16, num_layers=2, num_heads=2,
                     num_kv_heads=1, head_dim=8, mlp_width=32, max_len=256, norm_eps=1e-6,
                     tie_embeddings=True)


class ByteTokenizer:
  """Text <-> ids as bytes modulo the vocabulary; no BOS, no EOS (-1 is never sampled)."""

  eos_id = -1
  bos_id = None
  add_bos = False

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    return [b % self.vocab_size for b in text.encode()]

  def decode(self, ids) -> str:
    return " ".join(map(str, ids))


def random_model(seed: int = 0, tokenizer: bool = False, scale: float = 0.3,
                 **config) -> Model:
  """A random model of CONFIG (fields overridden by `config`): the tree `Decoder.init` makes
  (`abstract_params`), drawn with NumPy (the weights tests/data's checkpoints were made with):
  weights N(0, scale^2), norm scales 1 + the same noise (so a mix-up of norms cannot hide); a
  tied head is the table's transpose, as in `init`."""
  cfg = dataclasses.replace(CONFIG, **config)
  rng = np.random.default_rng(seed)
  draw = lambda path, leaf: jnp.asarray(
      ("scale" in jax.tree_util.keystr(path)) + scale * rng.standard_normal(leaf.shape),
      jnp.float32)
  params = jax.tree_util.tree_map_with_path(draw, abstract_params(cfg))
  if cfg.tie_embeddings:
    params["lm_head"] = {"kernel": params["embed"]["embedding"].T}
  return Model(config=cfg, params=params, spec="tiny",
               tokenizer=ByteTokenizer(cfg.vocab_size) if tokenizer else None)


def llama_dir(tmp_path, *, kv_heads=2, tie=False, rope_theta=10_000.0, bias=False, seed=0):
  """A random HF llama saved to `tmp_path`; returns the torch model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(
      vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
      rope_theta=rope_theta, tie_word_embeddings=tie, attention_bias=bias)
  model = transformers.LlamaForCausalLM(cfg).eval()
  _randomize_norms(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def gpt2_dir(tmp_path, seed=0):
  """A random HF gpt2 saved to `tmp_path`; returns the torch model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  _randomize_norms(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def _randomize_norms(model):
  """Norm scales default to 1 and biases to 0: perturb them so a mix-up cannot hide."""
  import torch

  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "ln_" in name:
        p.add_(0.1 * torch.randn_like(p))


# Tiny HF models of every RoPE family: 3 layers, local layers with a window of 4 or 5 (gemma:
# local, global, local), every kind of head count, tied and untied heads, biases.
FAMILY_CONFIGS = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True,
                                  tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                  use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=1, head_dim=12, attention_bias=True,
                                  tie_word_embeddings=False, rope_theta=5_000.0)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=5,
                                      tie_word_embeddings=False)),
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12,
                                    sliding_window=4, attn_logit_softcapping=3.0,
                                    final_logit_softcapping=5.0, tie_word_embeddings=False)),
    "gemma3": ("Gemma3TextConfig", dict(
        num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_theta=10_000.0, rope_local_base_freq=100.0, tie_word_embeddings=True)),
}


def family_dir(tmp_path, family: str, *, seed=0, **config):
  """A random tiny HF model of `family` (FAMILY_CONFIGS, fields overridden by `config`), eager
  attention, weights N(0, 0.1^2) (large enough that a missed soft-cap shows), norms and biases
  randomized, saved to `tmp_path`; returns the torch model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config_class, fields = FAMILY_CONFIGS[family]
  base = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, max_position_embeddings=64, initializer_range=0.1)
  cfg = getattr(transformers, config_class)(**{**base, **fields, **config})
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
  _randomize_norms(model)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model
