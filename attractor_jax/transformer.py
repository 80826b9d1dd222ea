"""One Linen decoder for every family of config.py, with an explicit KV cache and a host-layer tap.

    logits, cache = Decoder(cfg).apply({"params": p}, tokens, positions, cache)

The tap is the host layer's attention sublayer as it enters the residual stream (after
gemma's post-attention norm). A memory's feedback is added to the stream right after it,
before the MLP sublayer (the open loop: the tap never sees the feedback), or, with
`closed_loop`, at the host layer's input, before its attention (the tap depends on it). Local (sliding-window) layers keep the full cache
and mask the keys older than their window by position.

Layers are a list of per-layer param dicts, unrolled: every layer calls one jitted `_block`,
which a program traces once per shape and kind of layer (XLA inlines the calls). (A
`lax.scan` over stacked weights compiles faster but runs slower at batch 1 on CPU: XLA
copies each layer's weight slice before the matrix-vector products.) `cache=None`
runs plain causal attention over the pass's own tokens.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import layers
from attractor_jax.config import ModelConfig


@flax.struct.dataclass
class KVCache:
  """Keys and values, one [B, K, S, X] array per layer; slot s holds position s.

  Heads before slots: attention contracts each head's [S, X] block in place (with slots
  before heads XLA transposed the whole cache in every layer of every decode step).
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def max_len(self) -> int:
    return self.k[0].shape[-2]  # slots (leading row axes allowed)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
  shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
  zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
  return KVCache(k=zeros(), v=zeros())


class Taps(NamedTuple):
  """What the attractor layer and the metrics read from a pass."""

  attn_out_BxTxD: jax.Array  # host layer's attention sublayer output (before the residual add)
  hidden_BxTxD: jax.Array  # final normed hidden state
  residual_BxTxD: jax.Array  # the host layer's residual stream where the feedback enters,
  # before it is added (the layer's input when closed loop, else after its attention)


def param_shapes(cfg: ModelConfig, output_kernel: bool = False) -> dict[str, Any]:
  """The nested dict of parameter shapes; "layers" is a list with one dict per layer.

  An untied model, or a tied one with `output_kernel`, has a [D, V] "lm_head" kernel.
  The RoPE families store their q, k, v kernels side by side as one "qkv" kernel, and gate
  and up as one "gate_up": one matrix-vector product each instead of three and two. qwen3 and
  gemma3 add "q_norm" and "k_norm" [X] to "attn"; gemma adds "post_attn_norm" and
  "post_mlp_norm" to each layer ("mlp_norm" is the norm before the MLP in every family).
  """
  D, F, V, X = cfg.width, cfg.mlp_width, cfg.vocab_size, cfg.head_dim
  HX, KX = cfg.num_heads * X, cfg.num_kv_heads * X

  def lin(i, o, bias):
    return {"kernel": (i, o), **({"bias": (o,)} if bias else {})}

  if cfg.family == "gpt2":
    norm = lambda: {"scale": (D,), "bias": (D,)}
    attn = {"qkv": lin(D, 3 * D, True), "o": lin(D, D, True)}
    ffn = {"fc": lin(D, F, True), "proj": lin(F, D, True)}
  else:
    norm = lambda: {"scale": (D,)}
    attn = {"qkv": lin(D, HX + 2 * KX, cfg.attention_bias), "o": lin(HX, D, cfg.out_bias)}
    if cfg.qk_norm:
      attn.update(q_norm={"scale": (X,)}, k_norm={"scale": (X,)})
    ffn = {"gate_up": lin(D, 2 * F, cfg.mlp_bias), "down": lin(F, D, cfg.mlp_bias)}
  layer = {"attn_norm": norm(), "attn": attn, "mlp_norm": norm(), "mlp": ffn}
  if cfg.gemma:
    layer.update(post_attn_norm=norm(), post_mlp_norm=norm())
  shapes = {
      "embed": {"embedding": (V, D)},
      "layers": [layer for _ in range(cfg.num_layers)],
      "final_norm": norm(),
  }
  if cfg.family == "gpt2":
    shapes["pos_embed"] = {"embedding": (cfg.max_len, D)}
  if output_kernel or not cfg.tie_embeddings:
    shapes["lm_head"] = {"kernel": (D, V)}
  return shapes


def _init_like(shapes, dtype):
  """Random init for tests and shape checks: N(0, 0.02) weights, unit scales, zero biases."""

  def init(rng):
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
    keys = jax.random.split(rng, len(leaves))
    out = []
    for key, path, shape in zip(keys, paths, leaves):
      if "scale" in path:
        out.append(jnp.ones(shape, dtype))
      elif "bias" in path:
        out.append(jnp.zeros(shape, dtype))
      else:
        out.append(0.02 * jax.random.normal(key, shape, dtype))
    return jax.tree.unflatten(treedef, out)

  return init


class Decoder(nn.Module):
  """The decoder stack. Call with (tokens [B,T], positions [B,T], cache or None).

  `output_kernel`: the logits read params["lm_head"] even when the embeddings are tied: `load`
  stores a row-major [D, V] copy of the tied table there, which XLA's CPU matrix-vector
  product reads faster than the [V, D] table.
  """

  config: ModelConfig
  dtype: Any = jnp.float32
  output_kernel: bool = False

  def setup(self):
    shapes = param_shapes(self.config, self.output_kernel)
    self.weights = {name: self.param(name, _init_like(tree, self.dtype))
                    for name, tree in shapes.items()}

  def __call__(self, tokens_BxT, positions_BxT, cache: KVCache | None = None):
    logits, cache, _ = self.tapped(tokens_BxT, positions_BxT, cache)
    return logits, cache

  def tapped(self, tokens_BxT, positions_BxT, cache: KVCache | None = None,
             feedback_BxD=None, host_layer: int = 0, last_logits_only: bool = False,
             closed_loop: bool = False):
    """The forward pass, adding `feedback` after the host layer's attention (before it when
    `closed_loop`) and tapping it.

    Returns (logits [B,T,V] float32, or [B,1,V] for the last position only when
    `last_logits_only`; new cache or None; Taps).
    """
    cfg, w = self.config, self.weights
    B, T = tokens_BxT.shape
    x = jnp.take(w["embed"]["embedding"], tokens_BxT, axis=0).astype(self.dtype)
    if cfg.gemma:  # times sqrt(width), rounded to float32 and then to the embeddings' dtype
      x = x * jnp.asarray(np.float32(cfg.width ** 0.5), x.dtype)
    if cfg.family == "gpt2":
      x = x + jnp.take(w["pos_embed"]["embedding"], positions_BxT, axis=0).astype(self.dtype)
    feedback_BxD = (jnp.zeros((B, cfg.width), self.dtype) if feedback_BxD is None
                    else feedback_BxD.astype(self.dtype))
    start_B = positions_BxT[:, 0]
    keys_out, values_out, tap, residual = [], [], jnp.zeros_like(x), jnp.zeros_like(x)
    for idx, lp in enumerate(w["layers"]):
      past = None if cache is None else (cache.k[idx], cache.v[idx], start_B)
      host = idx == host_layer
      x, attn, stream, written = _block(
          x, lp, positions_BxT, past, feedback_BxD if host else None, cfg=cfg, dtype=self.dtype,
          window=cfg.window(idx), theta=cfg.rope_base(idx), closed_loop=closed_loop and host)
      if host:
        tap, residual = attn, stream
      if written is not None:
        keys_out.append(written[0])
        values_out.append(written[1])
    hidden = layers.norm(x, w["final_norm"], cfg)
    unembedded = hidden[:, -1:] if last_logits_only else hidden
    if "lm_head" in w:
      logits = layers.dense(unembedded, jax.tree.map(lambda a: a.astype(self.dtype), w["lm_head"]))
    else:
      logits = jnp.einsum("btd,vd->btv", unembedded, w["embed"]["embedding"].astype(self.dtype))
    logits = logits.astype(jnp.float32)
    if cfg.final_softcap is not None:
      logits = layers.softcap(logits, cfg.final_softcap)
    new_cache = None if cache is None else KVCache(k=tuple(keys_out), v=tuple(values_out))
    return logits, new_cache, Taps(tap, hidden, residual)


@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "window", "theta", "closed_loop"))
def _block(x_BxTxD, lp, positions_BxT, past, feedback_BxD, *, cfg: ModelConfig, dtype,
           window: int | None, theta: float, closed_loop: bool = False):
  """One decoder block: returns (x, attention sublayer output, the residual stream where the
  feedback enters (before it), the cache's new (keys, values) or None).

  `past` = (keys, values, start_B) of this layer's cache, or None; `feedback` (host layer
  only) is added after the attention sublayer, or to the block's input when `closed_loop`;
  `window` (local layers) and `theta` (the RoPE base) are the layer's. A jitted function, so a program traces it once per shape and kind
  (host layer or not, with a cache or not, local or global) and calls it in every layer (XLA
  inlines the calls: the same code as unrolled), instead of tracing all layers one by one.
  """
  lp = jax.tree.map(lambda a: a.astype(dtype), lp)
  residual = x_BxTxD
  if closed_loop and feedback_BxD is not None:
    x_BxTxD = x_BxTxD + feedback_BxD[:, None, :]
  q, k, v = layers.qkv(layers.norm(x_BxTxD, lp["attn_norm"], cfg), lp["attn"], positions_BxT, cfg,
                       theta)
  visible = None
  if past is not None:
    cache_k, cache_v, start_B = past
    visible = (cache_k, cache_v, jnp.arange(cache_k.shape[2])[None] < start_B[:, None])
  out = layers.attend(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), positions_BxT, cfg,
                      visible, window)
  written = None
  if past is not None:
    k, v = ordered_after(out, k), ordered_after(out, v)
    written = (_write(cache_k, k, start_B), _write(cache_v, v, start_B))
  attn = layers.dense(out, lp["attn"]["o"])
  if cfg.gemma:
    attn = layers.norm(attn, lp["post_attn_norm"], cfg)
  x_BxTxD = x_BxTxD + attn
  if not closed_loop:
    residual = x_BxTxD
    if feedback_BxD is not None:
      x_BxTxD = x_BxTxD + feedback_BxD[:, None, :]
  ffn = layers.mlp(layers.norm(x_BxTxD, lp["mlp_norm"], cfg), lp["mlp"], cfg)
  if cfg.gemma:
    ffn = layers.norm(ffn, lp["post_mlp_norm"], cfg)
  return x_BxTxD + ffn, attn, residual, written


def ordered_after(read, x):
  """`x`, made to depend on `read` through a select that never fires.

  XLA's CPU compiler writes a loop-carried cache in place only when the written values depend
  on every read of the old cache; otherwise it copies each layer's cache in every decode step.
  An optimization barrier does not survive to that pass.
  """
  return jnp.where(jnp.sum(read) > jnp.inf, jnp.zeros_like(x), x)


def _write(cache_BxKxSxX, new_BxTxKxX, start_B):
  """Writes a pass's keys (or values) at each row's start slot (in place under donation)."""
  new_BxKxTxX = new_BxTxKxX.transpose(0, 2, 1, 3).astype(cache_BxKxSxX.dtype)
  if cache_BxKxSxX.shape[0] == 1:  # one row: a plain slice update, no scatter
    return jax.lax.dynamic_update_slice(cache_BxKxSxX, new_BxKxTxX, (0, 0, start_B[0], 0))
  write_row = lambda c, n, s: jax.lax.dynamic_update_slice(c, n, (0, s, 0))
  return jax.vmap(write_row)(cache_BxKxSxX, new_BxKxTxX, start_B)
