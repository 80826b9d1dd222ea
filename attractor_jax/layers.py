"""Pure math of one decoder block: norms, RoPE, attention over a KV cache, MLPs.

Shape suffixes (docs/glossary.md): B rows, T positions of this pass, S cache slots, D width,
H query heads, K kv heads, G query heads per kv head, X head dim, F mlp width.
Params are plain dicts of one layer, as stored (stacked over layers) by the decoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attractor_jax.config import ModelConfig


def _lead(v_D, like):
  """Gives a last-axis vector the rank of `like` (rank promotion is explicit here)."""
  return v_D.reshape((1,) * (like.ndim - 1) + v_D.shape)


def rms_norm(x_BxTxD, p, eps, plus_one: bool = False):
  """RMSNorm in float32 over the last axis, scaling by w (or by 1 + w: gemma)."""
  x32 = x_BxTxD.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  scale = _lead(p["scale"], x32).astype(jnp.float32)
  if plus_one:
    scale = 1.0 + scale
  return (normed * scale).astype(x_BxTxD.dtype)


def layer_norm(x_BxTxD, p, eps):
  x32 = x_BxTxD.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  normed = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (normed * _lead(p["scale"], x32) + _lead(p["bias"], x32)).astype(x_BxTxD.dtype)


def norm(x, p, cfg: ModelConfig):
  if cfg.family == "gpt2":
    return layer_norm(x, p, cfg.norm_eps)
  return rms_norm(x, p, cfg.norm_eps, plus_one=cfg.gemma)


def softcap(x, cap: float):
  """cap * tanh(x / cap): logits squashed into (-cap, cap)."""
  return cap * jnp.tanh(x / cap)


def dense(x, p):
  y = jnp.einsum("...i,io->...o", x, p["kernel"])
  return y + _lead(p["bias"], y) if "bias" in p else y


def apply_rope(x, positions_BxT, theta):
  """Rotary embedding of x [B, T, heads, X] in the HF rotate-half layout (first half pairs
  with second half)."""
  half = x.shape[-1] // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxTxhalf = positions_BxT[..., None].astype(jnp.float32) * inv_freq[None, None, :]
  cos = jnp.cos(angle_BxTxhalf)[:, :, None, :]
  sin = jnp.sin(angle_BxTxhalf)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def qkv(x_BxTxD, p, positions_BxT, cfg: ModelConfig, theta: float):
  """Projects to queries, keys, values; then per-head q/k norms (qwen3, gemma3) and RoPE of
  base `theta` (every family but gpt2)."""
  B, T, _ = x_BxTxD.shape
  H, K, X = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  q, k, v = jnp.split(dense(x_BxTxD, p["qkv"]), [H * X, (H + K) * X], axis=-1)
  q, k, v = q.reshape(B, T, H, X), k.reshape(B, T, K, X), v.reshape(B, T, K, X)
  if cfg.qk_norm:
    q = rms_norm(q, p["q_norm"], cfg.norm_eps, plus_one=cfg.gemma)
    k = rms_norm(k, p["k_norm"], cfg.norm_eps, plus_one=cfg.gemma)
  if cfg.family != "gpt2":
    q = apply_rope(q, positions_BxT, theta)
    k = apply_rope(k, positions_BxT, theta)
  return q, k, v


def attend(q_BxTxHxX, k_BxKxTxX, v_BxKxTxX, q_pos_BxT, cfg: ModelConfig, past=None,
           window: int | None = None):
  """Causal grouped-query attention over the pass's own keys and, optionally, a cache's.

  `past` = (keys [B,K,S,X], values [B,K,S,X], positions [B,S]): the cache as it was before
  this pass and the position each slot holds (a row's padding holds negative ones); a slot is
  read when 0 <= its position < the pass's first. A local layer
  (`window`) sees key positions j with i - window < j <= i from query position i, as
  transformers' sliding-window mask does. The cache is read as it came in, never
  after this pass's write: read after the write, XLA copied every layer's cache each step.
  Logits are laid out slots-first ([B, K, S, G, T]): with the keys as the left operand XLA's
  CPU dots run faster in decode (T = 1) than with the queries first.
  """
  B, T, H, X = q_BxTxHxX.shape
  K = cfg.num_kv_heads
  scale = (cfg.query_pre_attn_scalar or X) ** -0.5
  q_BxKxGxTxX = q_BxTxHxX.reshape(B, T, K, H // K, X).transpose(0, 2, 3, 1, 4) * scale

  def scores(keys):
    logits = jnp.einsum("bksx,bkgtx->bksgt", keys, q_BxKxGxTxX).astype(jnp.float32)
    return logits if cfg.attn_softcap is None else softcap(logits, cfg.attn_softcap)

  def hide(logits, seen_BxSxT, k_pos_BxSx1):
    if window is not None:
      seen_BxSxT = seen_BxSxT & (k_pos_BxSx1 > q_pos_BxT[:, None, :] - window)
    return jnp.where(seen_BxSxT[:, None, :, None, :], logits, jnp.finfo(jnp.float32).min)

  own_BxSx1 = q_pos_BxT[:, :, None]
  logits = hide(scores(k_BxKxTxX), own_BxSx1 <= q_pos_BxT[:, None, :], own_BxSx1)
  values = [v_BxKxTxX]
  if past is not None:
    past_k, past_v, k_pos_BxS = past
    visible_BxS = (k_pos_BxS >= 0) & (k_pos_BxS < q_pos_BxT[:, :1])
    logits = jnp.concatenate([hide(scores(past_k), visible_BxS[:, :, None], k_pos_BxS[:, :, None]),
                              logits], axis=2)
    values = [past_v, *values]
  probs = jax.nn.softmax(logits, axis=2).astype(v_BxKxTxX.dtype)
  out_BxKxGxTxX, offset = 0, 0
  for v in values:
    width = v.shape[2]
    out_BxKxGxTxX += jnp.einsum("bksgt,bksx->bkgtx", probs[:, :, offset:offset + width], v)
    offset += width
  return out_BxKxGxTxX.transpose(0, 3, 1, 2, 4).reshape(B, T, H * X)


def mlp(x_BxTxD, p, cfg: ModelConfig):
  """gpt2: gelu_new; gemma: GeGLU (tanh gelu); the others: SwiGLU."""
  if cfg.family == "gpt2":
    return dense(jax.nn.gelu(dense(x_BxTxD, p["fc"]), approximate=True), p["proj"])
  gate, up = jnp.split(dense(x_BxTxD, p["gate_up"]), 2, axis=-1)
  act = jax.nn.gelu(gate, approximate=True) if cfg.gemma else jax.nn.silu(gate)
  return dense(act * up, p["down"])
