"""Generation: a jitted prefill, then a jitted decode loop (`lax.while_loop`), state explicit.

The prefill is a pure function of one sequence (batch 1 inside; a seed sweep vmaps it); the
decode loop, `decode_seeds`, runs all seeds in one loop (`decode` is its one-seed case). The
sampling key of token t is `fold_in(sample_key, t)`: runs resume exactly.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.memories.base import Memory
from attractor_jax.step import tapped_step
from attractor_jax.transformer import Decoder, KVCache, init_cache


def sample_token(logits_V, key, temperature, top_p):
  """Greedy when temperature == 0, else temperature + nucleus (top-p) sampling."""
  logits_V = logits_V.astype(jnp.float32)
  greedy = lambda: jnp.argmax(logits_V).astype(jnp.int32)

  def sampled():
    probs_V = jax.nn.softmax(logits_V / jnp.maximum(temperature, 1e-6))
    kept_V = nucleus(probs_V, top_p)
    return draw(jnp.where(kept_V, probs_V, 0.0), jax.random.uniform(key))

  return jax.lax.cond(temperature == 0.0, greedy, sampled)


def sample_tokens(logits_RxV, keys_R, temperature, top_p):
  """`sample_token` row by row (`lax.map`): one row's nucleus passes stay in the CPU's cache,
  where a vmap streams every row through memory in each pass (`experiments.decode_kernels`
  times 64 rows against the vmapped Gumbel sampler this replaced)."""
  return jax.lax.map(lambda row: sample_token(*row, temperature, top_p), (logits_RxV, keys_R))


def draw(weights_V, u, block: int = 256):
  """Index i with probability weights_V[i] / sum(weights_V) (non-negative, some positive), by
  the inverse CDF at one uniform u in [0, 1): block sums, then one block's cumulative sum.
  Replaces a Gumbel draw per token (`jax.random.categorical`): 49,152 random numbers a row.
  A zero weight is never drawn, whatever the rounding; float32 resolves probabilities to
  ~1e-7, far below what a top-p nucleus keeps.
  """
  V = weights_V.shape[0]
  blocks_BxW = jnp.pad(weights_V, (0, -V % block)).reshape(-1, block)
  ends_B = jnp.cumsum(blocks_BxW.sum(axis=1))
  target = jnp.minimum(u * ends_B[-1], jnp.nextafter(ends_B[-1], 0.0))
  b = jnp.sum(ends_B <= target)  # the first block whose end passes target: it has weight
  rest = target - jnp.where(b > 0, ends_B[b - 1], 0.0)
  weights_W = blocks_BxW[b]
  i = jnp.sum(jnp.cumsum(weights_W) <= rest)  # = block when rounding overshoots: the last
  last_weighted = block - 1 - jnp.argmax(weights_W[::-1] > 0)
  return (b * block + jnp.minimum(i, last_weighted)).astype(jnp.int32)


def nucleus(probs_V, top_p):
  """The top-p set: token i is kept when the tokens strictly more probable than it hold less
  than `top_p` of the mass (every token when top_p = 1).

  The smallest kept probability is found by bisection over float32 bit patterns (ordered as
  integers for non-negative floats): 32 masked sums, where sorting the vocabulary took
  ~15 ms per token on this CPU. Tied tokens at the boundary are kept or dropped together.
  """
  bits_V = jax.lax.bitcast_convert_type(probs_V, jnp.int32)

  def halve(_, lo_hi):  # mass above lo >= top_p > mass above hi
    lo, hi = lo_hi
    mid = lo + (hi - lo) // 2
    below = jnp.sum(jnp.where(bits_V > mid, probs_V, 0.0)) < top_p
    return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

  _, smallest_kept = jax.lax.fori_loop(0, 32, halve, (jnp.int32(-1), jnp.max(bits_V)))
  return (bits_V >= smallest_kept) | (top_p >= 1.0)


class Trace(flax.struct.PyTreeNode):
  """Per-pass record: one row per generated token (the pass that produced it)."""

  hidden: jax.Array  # [n, D] final hidden state at the pass's last position
  strength: jax.Array | None = None  # [n, N, K]
  max_sim: jax.Array | None = None  # [n, N]
  gate: jax.Array | None = None  # [n, N]
  feedback_norm: jax.Array | None = None  # [n]
  active: jax.Array | None = None  # [n, N, K]
  finite: jax.Array | None = None  # [n] bool: the state after this pass has no NaN or Inf


def state_finite(state) -> jax.Array:
  """One bool: no NaN or Inf in any floating-point array of the state."""
  floats = [a for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.isfinite(a).all() for a in floats]))


def _trace_row(taps, state, info, cfg: Memory) -> Trace:
  hidden = taps.hidden_BxTxD[0, -1]
  if info is None:
    return Trace(hidden=hidden)
  first = lambda tree: jax.tree.map(lambda a: a[0], tree)
  return Trace(hidden=hidden, finite=state_finite(state),
               **cfg.trace_fields(first(state), first(info)))


class Carry(flax.struct.PyTreeNode):
  """Everything a run needs to go on: saved by checkpoints, restored to resume."""

  token: jax.Array  # [] int32: the last sampled token (input of the next pass)
  position: jax.Array  # [] int32: its position
  t: jax.Array  # [] int32: tokens sampled so far (index of the next sampling key)
  done: jax.Array  # [] bool: EOS sampled
  cache: KVCache
  state: Any  # the memory's state with a leading batch axis of 1, or None


def prefill(params, prompt_T, init_key, sample_key, temperature, top_p, state, *,
            decoder: Decoder, cfg: Memory, cache_len: int, eos_id: int):
  """Runs the prompt as one pass and samples token 0. `state=None` starts a fresh memory,
  initialised from this pass's attention outputs (its feedback is zero, so the pass is the
  baseline's); a given state (batch axis 1) feeds its feedback into the prompt.

  Returns (Carry, Trace row of this pass).
  """
  T = prompt_T.shape[0]
  cache = _empty_cache(decoder, cache_len)
  tokens, positions = prompt_T[None], jnp.arange(T, dtype=jnp.int32)[None]
  if cfg.enabled and state is None:
    state = jax.tree.map(lambda a: a[None], init_from_prompt(params, tokens, positions, init_key,
                                                            decoder=decoder, cfg=cfg))
  logits, cache, state, info, taps = tapped_step(params, tokens, positions, cache, state,
                                                 decoder=decoder, cfg=cfg, last_logits_only=True)
  token = sample_token(logits[0, -1], jax.random.fold_in(sample_key, 0), temperature, top_p)
  carry = Carry(token=token, position=jnp.int32(T), t=jnp.int32(1), done=token == eos_id,
                cache=cache, state=state)
  return carry, _trace_row(taps, state, info, cfg)


def init_from_prompt(params, tokens_1xT, positions_1xT, key, *, decoder: Decoder, cfg: Memory):
  """A fresh state (no batch axis); memories that want it see the prompt's attention outputs
  from a baseline pass (the attractor layer scales its noise by them)."""
  if not cfg.uses_prompt:
    return cfg.fresh_state(decoder.config, key)
  _, _, taps = decoder.apply({"params": params}, tokens_1xT, positions_1xT, method=Decoder.tapped,
                             host_layer=cfg.layer)
  return cfg.fresh_state(decoder.config, key, taps.attn_out_BxTxD[0])


def _empty_cache(decoder: Decoder, cache_len: int) -> KVCache:
  return init_cache(decoder.config, 1, cache_len, decoder.dtype)


def _advance(params, c: Carry, position, *, decoder: Decoder, cfg: Memory):
  """One pass of one sequence at `position`: (its logits [V], cache, state, Trace row)."""
  logits, cache, state, info, taps = tapped_step(
      params, c.token[None, None], position[None, None], c.cache, c.state, decoder=decoder,
      cfg=cfg)
  return logits[0, -1], cache, state, _trace_row(taps, state, info, cfg)


def _empty_trace(row_shape_S, length: int):
  """Zero Trace buffers [S, length, ...] for rows of shape [S, ...]."""
  return jax.tree.map(lambda s: jnp.zeros((s.shape[0], length, *s.shape[1:]), s.dtype),
                      row_shape_S)


def decode(params, carry: Carry, sample_key, temperature, top_p, *, decoder: Decoder,
           cfg: Memory, length: int, eos_id: int):
  """Samples up to `length` more tokens for one sequence, one pass each, stopping at EOS:
  `decode_seeds` with one seed.

  Returns (tokens [length] int32 (EOS-padded after EOS), count, Carry, Trace [length]).
  """
  out = decode_seeds(params, jax.tree.map(lambda a: a[None], carry), sample_key[None],
                     temperature, top_p, decoder=decoder, cfg=cfg, length=length, eos_id=eos_id)
  return jax.tree.map(lambda a: a[0], out)


def decode_seeds(params, carry: Carry, sample_keys, temperature, top_p, *, decoder: Decoder,
                 cfg: Memory, length: int, eos_id: int):
  """Samples up to `length` more tokens for many seeds at once, one pass each, stopping at
  EOS: `carry` and `sample_keys` have a leading seed axis, and every seed is at the same
  position.

  One loop runs until every seed is done: a finished seed's tokens, count, state and trace
  stop, while its cache goes on being written (it is never read again). A `jax.vmap` of a
  one-sequence loop selected between the old and new cache of every seed in every step, and
  its per-seed positions made every cache write a scatter: both copy the whole cache.
  Returns (tokens [S, length], counts [S], Carry, Trace [S, length]).
  """
  advance = jax.vmap(functools.partial(_advance, params, decoder=decoder, cfg=cfg),
                     in_axes=(0, None))
  S = carry.done.shape[0]
  row_shape = jax.eval_shape(lambda: advance(carry, carry.position[0])[3])
  trace0 = _empty_trace(row_shape, length)
  if length == 0:  # the prefill's token was the only one asked for
    return jnp.zeros((S, 0), jnp.int32), jnp.zeros((S,), jnp.int32), carry, trace0

  def cond(loop):
    i, c, _, _, _ = loop
    return (i < length) & ~jnp.all(c.done)

  def body(loop):
    i, c, tokens, count, trace = loop
    logits_SxV, cache, state, row = advance(c, c.position[0])
    keys_S = jax.vmap(jax.random.fold_in)(sample_keys, c.t)
    token = sample_tokens(logits_SxV, keys_S, temperature, top_p)
    live_S = ~c.done
    keep = lambda new, old: jnp.where(live_S.reshape((S,) + (1,) * (new.ndim - 1)), new, old)
    token = jnp.where(live_S, token, eos_id)
    trace = jax.tree.map(lambda buf, r: buf.at[:, i].set(keep(r, buf[:, i])), trace, row)
    c = Carry(token=token, position=c.position + 1, t=c.t + live_S, done=c.done | (token == eos_id),
              cache=cache, state=jax.tree.map(keep, state, c.state))
    return i + 1, c, tokens.at[:, i].set(token), count + live_S, trace

  tokens0 = jnp.full((S, length), eos_id, jnp.int32)
  _, carry, tokens, count, trace = jax.lax.while_loop(
      cond, body, (jnp.int32(0), carry, tokens0, jnp.zeros((S,), jnp.int32), trace0))
  return tokens, count, carry, trace
