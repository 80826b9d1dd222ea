"""ModelConfig: the static description of a decoder, from an HF config or GGUF metadata."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from attractor_jax.errors import InputError

Family = Literal["llama", "gpt2", "qwen2", "qwen3", "mistral", "gemma2", "gemma3"]
FAMILIES: tuple[str, ...] = get_args(Family)
LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Everything the decoder needs to know about its shape; hashable, static under jit.

  llama: RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU; qwen2 and mistral are
  llama with q/k/v biases or a sliding window; qwen3 adds an RMSNorm on each head's queries
  and keys. gemma2: RMSNorms scaling by (1 + w) before and after each sublayer, embeddings
  times sqrt(width), GeGLU (tanh gelu), soft-capped attention and logits; gemma3: gemma2 with
  q/k norms and no attention soft-capping. gpt2: LayerNorm, learned positions, gelu_new, fused
  qkv. Any family may have local layers: `sliding_layers` see only the last `sliding_window`
  positions (their own included).
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
  attention_bias: bool = False  # q, k, v biases
  out_bias: bool = False  # the attention output projection's bias
  mlp_bias: bool = False
  sliding_window: int | None = None
  sliding_layers: tuple[int, ...] = ()
  rope_local_theta: float | None = None  # RoPE base of the local layers (None: rope_theta)
  query_pre_attn_scalar: float | None = None  # queries scale by its -1/2 power (None: head_dim)
  attn_softcap: float | None = None  # attention logits -> c * tanh(logits / c)
  final_softcap: float | None = None  # output logits -> c * tanh(logits / c)
  name: str = ""

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise InputError(f"family={self.family!r} is not supported: use one of {', '.join(FAMILIES)}")
    if self.num_heads % self.num_kv_heads:
      raise InputError(
          f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    object.__setattr__(self, "sliding_layers", tuple(sorted(set(self.sliding_layers))))
    if any(not 0 <= i < self.num_layers for i in self.sliding_layers):
      raise InputError(f"sliding_layers={self.sliding_layers} names a layer outside "
                       f"[0, {self.num_layers})")
    if self.sliding_layers and not (self.sliding_window or 0) > 0:
      raise InputError(f"sliding_window={self.sliding_window!r} with sliding layers: pass a "
                       "positive window")
    if self.attn_softcap is not None and self.family != "gemma2":
      raise InputError(f"attn_softcap={self.attn_softcap!r}: only gemma2 soft-caps attention")
    if self.final_softcap is not None and not self.gemma:
      raise InputError(f"final_softcap={self.final_softcap!r}: only gemma models soft-cap logits")

  @property
  def gemma(self) -> bool:
    """(1 + w) RMSNorms, post-sublayer norms, scaled embeddings, GeGLU."""
    return self.family in ("gemma2", "gemma3")

  @property
  def qk_norm(self) -> bool:
    """An RMSNorm over each head's queries and keys, before RoPE."""
    return self.family in ("qwen3", "gemma3")

  def window(self, layer: int) -> int | None:
    """How many positions (its own included) layer `layer` sees; None: all before it."""
    return self.sliding_window if layer in self.sliding_layers else None

  def rope_base(self, layer: int) -> float:
    """The RoPE base (theta) of layer `layer`."""
    local = layer in self.sliding_layers and self.rope_local_theta is not None
    return self.rope_local_theta if local else self.rope_theta


def _refuse(what: str, value: Any, fix: str):
  raise InputError(f"unsupported model option {what}={value!r}: {fix}")


def from_hf_config(hf: Any, name: str = "") -> ModelConfig:
  """Builds a ModelConfig from a transformers PretrainedConfig (see `HF_MODEL_TYPES`)."""
  model_type = getattr(hf, "model_type", None)
  if model_type not in HF_MODEL_TYPES:
    raise InputError(f"model_type={model_type!r} is not supported: attractor-jax runs "
                     f"{', '.join(map(repr, HF_MODEL_TYPES))} models")
  return HF_MODEL_TYPES[model_type](hf, name)


def _rope_theta(rope: dict, where: str, default: float) -> float:
  """The base of an unscaled, full-width RoPE parameter dict; other kinds are refused."""
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", None):
    _refuse(f"{where}rope_type", rope_type, "only unscaled RoPE ('default') is implemented")
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    _refuse(f"{where}partial_rotary_factor", rope["partial_rotary_factor"],
            "only full-width RoPE is implemented")
  return float(rope.get("rope_theta", default))


def _sliding(hf: Any) -> dict[str, Any]:
  """sliding_window and sliding_layers from `layer_types` (mistral: every layer, if windowed)."""
  window = getattr(hf, "sliding_window", None)
  types = getattr(hf, "layer_types", None)
  if types is None:
    types = ["sliding_attention" if window else "full_attention"] * hf.num_hidden_layers
  for kind in types:
    if kind not in LAYER_TYPES:
      _refuse("layer_types", kind, f"only {' and '.join(map(repr, LAYER_TYPES))} are implemented")
  if len(types) != hf.num_hidden_layers:
    _refuse("layer_types", types, f"give one per layer ({hf.num_hidden_layers})")
  local = tuple(i for i, kind in enumerate(types) if kind == "sliding_attention")
  if local and not window:
    _refuse("sliding_window", window, "layer_types names sliding layers: give their window")
  return dict(sliding_window=int(window) if local else None, sliding_layers=local)


def _decoder_from_hf(hf: Any, name: str, family: Family, act: str, capped: tuple[str, ...] = (),
                     **fields) -> ModelConfig:
  """The fields every RoPE family shares; `fields` adds or overrides the family's own, and
  `capped` names the soft-capping keys the family implements (the others are refused)."""
  act_key = "hidden_activation" if hasattr(hf, "hidden_activation") else "hidden_act"
  if getattr(hf, act_key, act) != act:
    _refuse(act_key, getattr(hf, act_key), f"{family} models must use {act!r}")
  if getattr(hf, "use_bidirectional_attention", None):
    _refuse("use_bidirectional_attention", True, "only causal attention is implemented")
  for key in ("attn_logit_softcapping", "final_logit_softcapping"):
    if key not in capped and getattr(hf, key, None) is not None:
      _refuse(key, getattr(hf, key), f"{family} models are run without this soft-capping")
  if "rope_theta" not in fields:
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    fields["rope_theta"] = _rope_theta(rope, "", getattr(hf, "rope_theta", 10_000.0))
  return ModelConfig(
      family=family,
      vocab_size=hf.vocab_size,
      width=hf.hidden_size,
      num_layers=hf.num_hidden_layers,
      num_heads=hf.num_attention_heads,
      num_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
      head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
      mlp_width=hf.intermediate_size,
      max_len=hf.max_position_embeddings,
      norm_eps=hf.rms_norm_eps,
      tie_embeddings=bool(hf.tie_word_embeddings),
      name=name,
      **_sliding(hf),
      **fields,
  )


def _llama_from_hf(hf: Any, name: str) -> ModelConfig:
  bias = bool(getattr(hf, "attention_bias", False))
  return _decoder_from_hf(hf, name, "llama", "silu", attention_bias=bias, out_bias=bias,
                          mlp_bias=bool(getattr(hf, "mlp_bias", False)))


def _mistral_from_hf(hf: Any, name: str) -> ModelConfig:
  return _decoder_from_hf(hf, name, "mistral", "silu")


def _qwen2_from_hf(hf: Any, name: str) -> ModelConfig:
  return _decoder_from_hf(hf, name, "qwen2", "silu", attention_bias=True)


def _qwen3_from_hf(hf: Any, name: str) -> ModelConfig:
  bias = bool(getattr(hf, "attention_bias", False))
  return _decoder_from_hf(hf, name, "qwen3", "silu", attention_bias=bias, out_bias=bias)


def _gemma2_from_hf(hf: Any, name: str) -> ModelConfig:
  return _decoder_from_hf(
      hf, name, "gemma2", "gelu_pytorch_tanh", **_gemma_fields(hf),
      capped=("attn_logit_softcapping", "final_logit_softcapping"),
      attn_softcap=_float_or_none(hf.attn_logit_softcapping))


def _gemma3_from_hf(hf: Any, name: str) -> ModelConfig:
  """Gemma3TextConfig: transformers keeps a RoPE parameter dict per layer type (from
  config.json's rope_theta and rope_local_base_freq)."""
  rope = getattr(hf, "rope_parameters", None) or {}
  full = rope.get("full_attention") or {}
  local = rope.get("sliding_attention") or {}
  return _decoder_from_hf(
      hf, name, "gemma3", "gelu_pytorch_tanh", **_gemma_fields(hf),
      capped=("final_logit_softcapping",),
      rope_theta=_rope_theta(full, "rope_parameters['full_attention'].", 1_000_000.0),
      rope_local_theta=_rope_theta(local, "rope_parameters['sliding_attention'].", 10_000.0))


def _gemma_fields(hf: Any) -> dict[str, Any]:
  bias = bool(getattr(hf, "attention_bias", False))
  return dict(attention_bias=bias, out_bias=bias,
              query_pre_attn_scalar=float(hf.query_pre_attn_scalar),
              final_softcap=_float_or_none(hf.final_logit_softcapping))


def _float_or_none(x) -> float | None:
  return None if x is None else float(x)


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
      out_bias=True,
      mlp_bias=True,
      name=name,
  )


HF_MODEL_TYPES = {"llama": _llama_from_hf, "mistral": _mistral_from_hf, "qwen2": _qwen2_from_hf,
                  "qwen3": _qwen3_from_hf, "gemma2": _gemma2_from_hf,
                  "gemma3_text": _gemma3_from_hf, "gpt2": _gpt2_from_hf}


GGUF_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "gemma3")


def from_gguf_metadata(meta: dict[str, Any], has_output_tensor: bool,
                       name: str = "") -> ModelConfig:
  """Builds a ModelConfig from GGUF key/values (see `GGUF_ARCHITECTURES`).

  gemma3 files record neither query_pre_attn_scalar (the 62-layer 27B model scales queries by
  width / heads, the others by head_dim) nor, unless given, the local layers' RoPE base
  (10,000) and their pattern (every 6th layer is global).
  """
  arch = meta.get("general.architecture")
  if arch not in GGUF_ARCHITECTURES:
    raise InputError(f"GGUF architecture {arch!r} is not supported: supported are "
                     f"{', '.join(map(repr, GGUF_ARCHITECTURES))}")

  def need(key: str) -> Any:
    if f"{arch}.{key}" not in meta:
      raise InputError(f"GGUF architecture {arch!r}: metadata key {arch}.{key} is missing; "
                       "the file is incomplete")
    return meta[f"{arch}.{key}"]

  scaling = meta.get(f"{arch}.rope.scaling.type", "none")
  if scaling not in ("none", None):
    _refuse(f"{arch}.rope.scaling.type", scaling, "only unscaled RoPE is implemented")
  width, heads = int(need("embedding_length")), int(need("attention.head_count"))
  layers = int(need("block_count"))
  head_dim = int(meta.get(f"{arch}.attention.key_length", width // heads))
  for key in ("attention.value_length", "rope.dimension_count"):
    if int(meta.get(f"{arch}.{key}", head_dim)) != head_dim:
      _refuse(f"{arch}.{key}", meta[f"{arch}.{key}"], f"it must equal head_dim={head_dim}")
  if "tokenizer.ggml.tokens" not in meta and f"{arch}.vocab_size" not in meta:
    raise InputError(f"GGUF architecture {arch!r}: the file has no vocabulary "
                     f"({arch}.vocab_size or tokenizer.ggml.tokens)")
  vocab = meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])
  fields = dict(family=arch, width=width, num_layers=layers, num_heads=heads, head_dim=head_dim,
                vocab_size=int(vocab), num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
                mlp_width=int(need("feed_forward_length")), max_len=int(need("context_length")),
                norm_eps=float(need("attention.layer_norm_rms_epsilon")),
                tie_embeddings=not has_output_tensor,
                rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10_000.0)), name=name)
  if arch == "qwen2":
    fields.update(attention_bias=True)
  if arch == "gemma3":
    fields.update(_gemma3_gguf_fields(meta, need, layers, width // heads, head_dim))
  return ModelConfig(**fields)


def _gemma3_gguf_fields(meta, need, layers: int, width_per_head: int, head_dim: int) -> dict:
  if "gemma3.attn_logit_softcapping" in meta:
    _refuse("gemma3.attn_logit_softcapping", meta["gemma3.attn_logit_softcapping"],
            "gemma3 models are run without attention soft-capping")
  pattern = meta.get("gemma3.attention.sliding_window_pattern", 6)
  if isinstance(pattern, list):  # one flag per layer: True is local
    if len(pattern) != layers:
      _refuse("gemma3.attention.sliding_window_pattern", pattern,
              f"give one flag per layer ({layers})")
    local = tuple(i for i, flag in enumerate(pattern) if flag)
  elif isinstance(pattern, int) and pattern > 0:  # every pattern-th layer is global
    local = tuple(i for i in range(layers) if (i + 1) % pattern)
  else:
    _refuse("gemma3.attention.sliding_window_pattern", pattern, "give a positive period or flags")
  softcap = meta.get("gemma3.final_logit_softcapping")
  return dict(
      rope_theta=float(meta.get("gemma3.rope.freq_base", 1_000_000.0)),
      rope_local_theta=float(meta.get("gemma3.rope.freq_base_swa", 10_000.0)),
      sliding_window=int(need("attention.sliding_window")), sliding_layers=local,
      query_pre_attn_scalar=float(width_per_head if layers == 62 else head_dim),
      final_softcap=None if softcap is None else float(softcap))
