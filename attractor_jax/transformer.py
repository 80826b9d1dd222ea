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
  """What a memory and the metrics read from a pass, each [B, T, D]."""

  attn_out: jax.Array  # the host layer's attention output (before the residual add)
  hidden: jax.Array  # the final normed hidden state (the unembedding's input)
  residual: jax.Array  # the host layer's residual stream where the feedback enters, before it
  # is added (the layer's input when the loop is closed, else after its attention)


class Decoder(nn.Module):
  """The decoder stack. Call with (tokens [B,T], positions [B,T], cache or None).

  Its params (`init`, or `load`'s converted weights, checked against `abstract_params`):
  "embed", "layers" (a list, one dict per layer), "final_norm", gpt2's "pos_embed", and
  "lm_head" {"kernel": [D, V]}, which for tied embeddings is the table's transpose, stored
  (XLA's CPU matrix-vector product reads it faster than the [V, D] table). The RoPE families
  store their q, k, v kernels side by side as one "qkv" kernel, and gate and up as one
  "gate_up": one matrix-vector product each instead of three and two. qwen3 and gemma3 add
  "q_norm" and "k_norm" [X] to "attn"; gemma adds "post_attn_norm" and "post_mlp_norm" to each
  layer ("mlp_norm" is the norm before the MLP in every family).
  """

  config: ModelConfig
  dtype: Any = jnp.float32

  def setup(self):
    """Declares the params: N(0, 0.02) weights, unit norm scales, zero biases."""
    cfg = self.config
    D, F, V, X = cfg.width, cfg.mlp_width, cfg.vocab_size, cfg.head_dim
    HX, KX = cfg.num_heads * X, cfg.num_kv_heads * X
    at = lambda init, *shape: functools.partial(init, shape=shape, dtype=self.dtype)
    weight = lambda *shape: at(nn.initializers.normal(0.02), *shape)
    ones, zeros = nn.initializers.ones, nn.initializers.zeros

    def lin(i, o, bias):
      return {"kernel": weight(i, o), **({"bias": at(zeros, o)} if bias else {})}

    if cfg.family == "gpt2":
      norm = lambda: {"scale": at(ones, D), "bias": at(zeros, D)}
      attn = {"qkv": lin(D, 3 * D, True), "o": lin(D, D, True)}
      ffn = {"fc": lin(D, F, True), "proj": lin(F, D, True)}
    else:
      norm = lambda: {"scale": at(ones, D)}
      attn = {"qkv": lin(D, HX + 2 * KX, cfg.attention_bias), "o": lin(HX, D, cfg.out_bias)}
      if cfg.qk_norm:
        attn.update(q_norm={"scale": at(ones, X)}, k_norm={"scale": at(ones, X)})
      ffn = {"gate_up": lin(D, 2 * F, cfg.mlp_bias), "down": lin(F, D, cfg.mlp_bias)}
    layer = {"attn_norm": norm(), "attn": attn, "mlp_norm": norm(), "mlp": ffn}
    if cfg.gemma:
      layer.update(post_attn_norm=norm(), post_mlp_norm=norm())
    inits = {"embed": {"embedding": weight(V, D)},
             "layers": [layer for _ in range(cfg.num_layers)], "final_norm": norm()}
    if cfg.family == "gpt2":
      inits["pos_embed"] = {"embedding": weight(cfg.max_len, D)}
    w = {name: self.param(name, _per_leaf(tree)) for name, tree in inits.items()}
    tied = lambda _: {"kernel": w["embed"]["embedding"].T}
    w["lm_head"] = self.param("lm_head", tied if cfg.tie_embeddings
                              else _per_leaf({"kernel": weight(D, V)}))
    self.weights = w

  def __call__(self, tokens_BxT, positions_BxT, cache: KVCache | None = None):
    logits, cache, _ = self.tapped(tokens_BxT, positions_BxT, cache)
    return logits, cache

  def tapped(self, tokens_BxT, positions_BxT, cache: KVCache | None = None,
             feedback_BxD=None, host_layer: int = 0, last_logits_only: bool = False,
             closed_loop: bool = False, slot=None):
    """The forward pass, adding `feedback` after the host layer's attention (before it when
    `closed_loop`) and tapping it.

    With a cache, the pass's tokens are written from `slot` on (one int for every row;
    default: row 0's first position). Rows are left-aligned by padding: a row whose first
    position is p reads the slots [slot - p, slot) as positions 0..p-1, never the padding
    before them.

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
    slot = positions_BxT[0, 0] if slot is None else slot
    keys_out, values_out, tap, residual = [], [], jnp.zeros_like(x), jnp.zeros_like(x)
    for idx, lp in enumerate(w["layers"]):
      past = None if cache is None else (cache.k[idx], cache.v[idx], slot)
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
    head = jax.tree.map(lambda a: a.astype(self.dtype), w["lm_head"])
    logits = layers.dense(unembedded, head).astype(jnp.float32)
    if cfg.final_softcap is not None:
      logits = layers.softcap(logits, cfg.final_softcap)
    new_cache = None if cache is None else KVCache(k=tuple(keys_out), v=tuple(values_out))
    return logits, new_cache, Taps(tap, hidden, residual)


def _per_leaf(initializers):
  """A Flax init function for a tree of initializers `f(key)`: each leaf gets its own key."""

  def init(rng):
    leaves, treedef = jax.tree.flatten(initializers)
    return treedef.unflatten([f(k) for f, k in zip(leaves, jax.random.split(rng, len(leaves)))])

  return init


def abstract_params(cfg: ModelConfig) -> dict[str, Any]:
  """The decoder's float32 params as ShapeDtypeStructs: `jax.eval_shape` of its `init`."""
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(Decoder(cfg).init, jax.random.key(0), tokens, tokens)["params"]


@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "window", "theta", "closed_loop"))
def _block(x_BxTxD, lp, positions_BxT, past, feedback_BxD, *, cfg: ModelConfig, dtype,
           window: int | None, theta: float, closed_loop: bool = False):
  """One decoder block: returns (x, attention sublayer output, the residual stream where the
  feedback enters (before it), the cache's new (keys, values) or None).

  `past` = (keys, values, slot) of this layer's cache, or None; `feedback` (host layer
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
    cache_k, cache_v, slot = past
    pad_Bx1 = slot - positions_BxT[:, :1]  # the slot of each row's position 0
    slot_positions_BxS = jnp.arange(cache_k.shape[2])[None] - pad_Bx1
    visible = (cache_k, cache_v, slot_positions_BxS)
  out = layers.attend(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), positions_BxT, cfg,
                      visible, window)
  written = None
  if past is not None:
    k, v = ordered_after(out, k), ordered_after(out, v)
    written = (_write(cache_k, k, slot), _write(cache_v, v, slot))
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


def _write(cache_BxKxSxX, new_BxTxKxX, slot):
  """Writes a pass's keys (or values) from `slot` on, every row at once: a plain slice update
  (in place under donation), never a scatter."""
  new_BxKxTxX = new_BxTxKxX.transpose(0, 2, 1, 3).astype(cache_BxKxSxX.dtype)
  return jax.lax.dynamic_update_slice(cache_BxKxSxX, new_BxKxTxX, (0, 0, slot, 0))
