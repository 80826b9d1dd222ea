"""ModelConfig: the static description of a decoder, from an HF config or GGUF metadata."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from attractor_jax.errors import InputError

Family = Literal["llama", "gpt2"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Everything the decoder needs to know about its shape; hashable, static under jit.

  The llama family: RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU.
  The gpt2 family: LayerNorm, learned positions, gelu_new, fused qkv.
  """

  family: Family
  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_width: int
  max_len: int
  norm_eps: float
  tie_embeddings: bool
  rope_theta: float = 10_000.0
  attention_bias: bool = False
  mlp_bias: bool = False
  name: str = ""

  def __post_init__(self):
    if self.family not in ("llama", "gpt2"):
      raise InputError(f"family={self.family!r} is not supported: use 'llama' or 'gpt2'")
    if self.num_heads % self.num_kv_heads:
      raise InputError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")


def _refuse(what: str, value: Any, fix: str):
  raise InputError(f"unsupported model option {what}={value!r}: {fix}")


def from_hf_config(hf: Any, name: str = "") -> ModelConfig:
  """Builds a ModelConfig from a transformers PretrainedConfig (llama or gpt2)."""
  model_type = getattr(hf, "model_type", None)
  if model_type == "llama":
    return _llama_from_hf(hf, name)
  if model_type == "gpt2":
    return _gpt2_from_hf(hf, name)
  raise InputError(
      f"model_type={model_type!r} is not supported: attractor-jax runs 'llama' and 'gpt2' models")


def _llama_from_hf(hf: Any, name: str) -> ModelConfig:
  rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", None):
    _refuse("rope_type", rope_type, "only unscaled RoPE ('default') is implemented")
  theta = rope.get("rope_theta", getattr(hf, "rope_theta", 10_000.0))
  if getattr(hf, "hidden_act", "silu") != "silu":
    _refuse("hidden_act", hf.hidden_act, "llama models must use 'silu'")
  head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
  if head_dim * hf.num_attention_heads != hf.hidden_size:
    _refuse("head_dim", head_dim, "head_dim * num_attention_heads must equal hidden_size")
  return ModelConfig(
      family="llama",
      vocab_size=hf.vocab_size,
      width=hf.hidden_size,
      num_layers=hf.num_hidden_layers,
      num_heads=hf.num_attention_heads,
      num_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
      head_dim=head_dim,
      mlp_width=hf.intermediate_size,
      max_len=hf.max_position_embeddings,
      norm_eps=hf.rms_norm_eps,
      tie_embeddings=bool(hf.tie_word_embeddings),
      rope_theta=float(theta),
      attention_bias=bool(getattr(hf, "attention_bias", False)),
      mlp_bias=bool(getattr(hf, "mlp_bias", False)),
      name=name,
  )


def _gpt2_from_hf(hf: Any, name: str) -> ModelConfig:
  if hf.activation_function != "gelu_new":
    _refuse("activation_function", hf.activation_function, "gpt2 models must use 'gelu_new'")
  for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
    if getattr(hf, flag, False):
      _refuse(flag, True, "this gpt2 variant is not implemented")
  if not getattr(hf, "scale_attn_weights", True):
    _refuse("scale_attn_weights", False, "this gpt2 variant is not implemented")
  return ModelConfig(
      family="gpt2",
      vocab_size=hf.vocab_size,
      width=hf.n_embd,
      num_layers=hf.n_layer,
      num_heads=hf.n_head,
      num_kv_heads=hf.n_head,
      head_dim=hf.n_embd // hf.n_head,
      mlp_width=hf.n_inner or 4 * hf.n_embd,
      max_len=hf.n_positions,
      norm_eps=hf.layer_norm_epsilon,
      tie_embeddings=True,
      attention_bias=True,
      mlp_bias=True,
      name=name,
  )


def from_gguf_metadata(meta: dict[str, Any], has_output_tensor: bool, name: str = "") -> ModelConfig:
  """Builds a ModelConfig from GGUF key/values (llama architecture only)."""
  arch = meta.get("general.architecture")
  if arch != "llama":
    raise InputError(
        f"GGUF architecture {arch!r} is not supported: only 'llama' GGUF files load")
  scaling = meta.get("llama.rope.scaling.type", "none")
  if scaling not in ("none", None):
    _refuse("llama.rope.scaling.type", scaling, "only unscaled RoPE is implemented")
  width = int(meta["llama.embedding_length"])
  heads = int(meta["llama.attention.head_count"])
  head_dim = width // heads
  rope_dim = int(meta.get("llama.rope.dimension_count", head_dim))
  if rope_dim != head_dim:
    _refuse("llama.rope.dimension_count", rope_dim, f"partial RoPE is not implemented (head_dim={head_dim})")
  vocab = int(meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"]))
  return ModelConfig(
      family="llama",
      vocab_size=vocab,
      width=width,
      num_layers=int(meta["llama.block_count"]),
      num_heads=heads,
      num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
      head_dim=head_dim,
      mlp_width=int(meta["llama.feed_forward_length"]),
      max_len=int(meta["llama.context_length"]),
      norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
      tie_embeddings=not has_output_tensor,
      rope_theta=float(meta.get("llama.rope.freq_base", 10_000.0)),
      name=name,
  )
