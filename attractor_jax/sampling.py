"""Sampling: the decode loop's typed state, its trace, and the token samplers (greedy, top-p)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.transformer import KVCache
from attractor_jax.validation import check_int


class Trace(flax.struct.PyTreeNode):
  """Per-pass record: one row per generated token (the pass that produced it)."""

  hidden: jax.Array  # [n, D] final hidden state at the pass's last position
  finite: jax.Array  # [n] bool: the pass's logits and the memory state after it have no NaN/Inf
  info: Any = None  # the memory's info pytree (e.g. attractor.UpdateInfo), [n, ...]; None: off
  feedback_ratio: Any = None  # [n]: |feedback the pass received| / its residual norm; None: off
  produced_ratio: Any = None  # [n]: |feedback it made for the next pass| / its residual norm


class SamplingState(flax.struct.PyTreeNode):
  """The decode loop's carry: what the rows generated so far and what a next pass needs.

  Every field has a leading row axis B (seeds, or prompts x seeds), the decoder's batch
  axis. Rows decode in step: every row that is not done has written `count` tokens, and
  every row's next pass writes the same cache slot.
  """

  tokens: jax.Array  # [B, L] int32: generated ids, valid up to `count`
  count: jax.Array  # [B] int32: tokens generated (up to and including EOS)
  trace: Trace  # [B, L, ...]: one row per generated token
  token: jax.Array  # [B] int32: the last sampled token (input of the next pass)
  position: jax.Array  # [B] int32: its position in its own sequence
  slot: jax.Array  # [B] int32: the cache slot it is written to (its position plus the row's
  # left padding; the same for every row)
  t: jax.Array  # [B] int32: tokens sampled so far (index of the next sampling key)
  done: jax.Array  # [B] bool: EOS sampled
  cache: KVCache | None  # [B, ...] per layer; None once a program no longer needs it
  memory_state: Any  # [B, ...], or None without a memory


def check_sampling(max_new_tokens: int, temperature: float, top_p: float):
  """Refuses a token count, temperature or top-p that sampling cannot use."""
  check_int("max_new_tokens", max_new_tokens, 1)
  if not np.isfinite(temperature) or temperature < 0:
    raise InputError(f"temperature={temperature!r}: pass a number >= 0 (0 is greedy)")
  if not np.isfinite(top_p) or not 0 < top_p <= 1:
    raise InputError(f"top_p={top_p!r}: pass a number in (0, 1]")


def check_finite(finite_BxL, counts_B, rows, memory, final_updates_B=None):
  """Raises InputError naming the first row (e.g. "seed 3") and token whose pass gave NaN or
  Inf logits or memory state, and the memory; a row's first `count` passes are checked.
  `final_updates_B`, the memory's update counts at the end (`Memory.updates`), also names
  the update."""
  for row, (ok_L, count) in enumerate(zip(np.asarray(finite_BxL), np.asarray(counts_B))):
    bad = np.flatnonzero(~ok_L[:count])
    if bad.size:
      i = int(bad[0])
      where = f"token {i} of this call"
      if final_updates_B is not None:
        where += f" (memory update {int(final_updates_B[row]) - (int(count) - 1 - i)})"
      kind = "no memory" if memory is None else f"memory {memory.kind!r}"
      hint = "" if memory is None else f"{memory.nonfinite_hint}, or "
      raise InputError(
          f"{rows[row]}: the pass that produced {where} gave NaN or Inf logits or memory "
          f"state ({kind}); nothing of it is saved: {hint}restore an earlier good state")


def state_finite(state) -> jax.Array:
  """One bool: no NaN or Inf in any floating-point array of the state."""
  floats = [a for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.isfinite(a).all() for a in floats]))


def sample_token(logits_V, key, temperature, top_p):
  """Greedy when temperature == 0, else temperature + nucleus (top-p) sampling."""
  logits_V = logits_V.astype(jnp.float32)
  greedy = lambda: first_max(logits_V)

  def sampled():
    probs_V = jax.nn.softmax(logits_V / jnp.maximum(temperature, 1e-6))
    kept_V = nucleus(probs_V, top_p)
    return draw(jnp.where(kept_V, probs_V, 0.0), jax.random.uniform(key))

  return jax.lax.cond(temperature == 0.0, greedy, sampled)


def first_max(logits_V):
  """`jnp.argmax` (the first index of the largest value) as a max and a min over indices:
  two plain reductions, which XLA's CPU backend runs ~3x faster than argmax's paired one
  (experiments.decode_kernels). A NaN row gives the last index (the NaN guard rejects it)."""
  V = logits_V.shape[0]
  at_max = logits_V == jnp.max(logits_V)
  return jnp.minimum(jnp.min(jnp.where(at_max, jnp.arange(V, dtype=jnp.int32), V)), V - 1)


def sample_tokens(logits_BxV, keys_B, temperature, top_p):
  """`sample_token` row by row (`lax.map`): one row's nucleus passes stay in the CPU's cache,
  where a vmap streams every row through memory in each pass."""
  return jax.lax.map(lambda row: sample_token(*row, temperature, top_p), (logits_BxV, keys_B))


def draw(weights_V, u, block: int = 256):
  """Index i with probability weights_V[i] / sum(weights_V) (non-negative, some positive), by
  the inverse CDF at one uniform u in [0, 1): block sums, then one block's cumulative sum.

  One uniform per row instead of a Gumbel per token. A zero weight is never drawn, whatever
  the rounding; float32 resolves probabilities to ~1e-7, far below what a top-p nucleus keeps.
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


def nucleus(probs_V, top_p, candidates: int = 256):
  """The top-p set: token i is kept when the tokens strictly more probable than it hold less
  than `top_p` of the mass (every token when top_p = 1).

  The smallest kept probability is found by bisection (`smallest_kept`) over the `candidates`
  most probable tokens when they hold `top_p` of the mass (the nucleus is then among them:
  every decision of the bisection is the one it takes over the whole vocabulary), else over
  the whole vocabulary. Tied tokens at the boundary are kept or dropped together.
  """
  V = probs_V.shape[0]
  top_C = jax.lax.top_k(probs_V, min(candidates, V))[0]
  smallest = jax.lax.cond(jnp.sum(top_C) >= top_p, lambda: smallest_kept(top_C, top_p),
                          lambda: smallest_kept(probs_V, top_p))
  return (jax.lax.bitcast_convert_type(probs_V, jnp.int32) >= smallest) | (top_p >= 1.0)


def smallest_kept(probs_V, top_p):
  """The float32 bit pattern of the smallest probability the top-p set keeps, by bisection
  over bit patterns (ordered as integers for non-negative floats): 32 masked sums instead of
  a sort."""
  bits_V = jax.lax.bitcast_convert_type(probs_V, jnp.int32)

  def halve(_, lo_hi):  # mass above lo >= top_p > mass above hi
    lo, hi = lo_hi
    mid = lo + (hi - lo) // 2
    below = jnp.sum(jnp.where(bits_V > mid, probs_V, 0.0)) < top_p
    return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

  return jax.lax.fori_loop(0, 32, halve, (jnp.int32(-1), jnp.max(bits_V)))[1]
