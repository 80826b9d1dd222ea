"""Continuous cache (Grave et al., ICLR 2017): mix the model's distribution with a pointer
distribution over the tokens that followed similar hidden states in the recent past.

  p(w) = (1 - lam) p_model(w) + lam p_cache(w),
  p_cache(w) ~ sum_i [x_{i+1} = w] exp(theta cos(h_t, h_i))

over the last `window` (hidden state, next token) pairs completed before the prediction, h
the final hidden state (the unembedding's input), cosine-normalised. Positions inside a pass
see only the pairs completed by then (causal), so a multi-token pass scores exactly like
token-by-token passes.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.memories.base import Info, Memory, Observation, pass_pairs, push, unit
from attractor_jax.validation import check_int, check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class CacheConfig(Memory):
  """window pairs kept, theta the similarity sharpness, lam the cache's share (0 = inert)."""

  kind = "cache"
  starts_silent = True
  uses_logits = True

  window: int = 512
  theta: float = 20.0
  lam: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    check_int("window", self.window, 1, 1 << 16)
    check_range("theta", self.theta, 0.0, 1e4)
    check_range("lam", self.lam, 0.0, 1.0)

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "CacheState":
    W, D = self.window, model_config.width
    return CacheState(keys=jnp.zeros((W, D), jnp.float32), next_tokens=jnp.zeros((W,), jnp.int32),
                      filled=jnp.zeros((W,), bool), pending=jnp.zeros((D,), jnp.float32),
                      pending_ok=jnp.zeros((), bool), step=jnp.zeros((), jnp.int32))

  def feedback(self, state):
    return None  # the cache changes the logits, not the residual stream

  def read(self, state, obs: Observation, params) -> jax.Array:
    keys_P, next_P, visible_TxP = _candidates(state, obs, self.window)
    sims_TxP = jnp.einsum("td,pd->tp", unit(obs.hidden.astype(jnp.float32)), keys_P)
    scores = jnp.where(visible_TxP, self.theta * sims_TxP, -jnp.inf)
    any_T = visible_TxP.any(axis=1)
    w_TxP = jax.nn.softmax(jnp.where(any_T[:, None], scores, 0.0), axis=1) * visible_TxP
    p_cache_TxV = jnp.zeros_like(obs.logits).at[:, next_P].add(w_TxP)
    logp_model = jax.nn.log_softmax(obs.logits.astype(jnp.float32), axis=-1)
    lam_T = jnp.where(any_T, self.lam, 0.0)[:, None]
    mixed = jnp.logaddexp(jnp.log1p(-lam_T) + logp_model, jnp.log(lam_T) + jnp.log(p_cache_TxV))
    return jnp.where(lam_T > 0, mixed, logp_model)

  def observe(self, state, obs: Observation, params):
    keys_T, next_T, _, ok_T = pass_pairs(state.pending, state.pending_ok, obs)
    new = CacheState(keys=push(state.keys, unit(keys_T.astype(jnp.float32))),
                     next_tokens=push(state.next_tokens, next_T), filled=push(state.filled, ok_T),
                     pending=obs.hidden[-1].astype(jnp.float32), pending_ok=jnp.ones((), bool),
                     step=state.step + 1)
    return new, Info(feedback_norm=jnp.zeros((), jnp.float32))

  def summary(self, state):
    return {**super().summary(state), "pairs": int(state.filled.sum())}


@flax.struct.dataclass
class CacheState:
  """The last W (cosine-normalised hidden state, next token) pairs, oldest first."""

  keys: jax.Array  # [W, D] unit vectors
  next_tokens: jax.Array  # [W] int32
  filled: jax.Array  # [W] bool
  pending: jax.Array  # [D]: the last hidden state, waiting for its next token
  pending_ok: jax.Array  # [] bool
  step: jax.Array  # [] int32: passes observed


def _candidates(state: CacheState, obs: Observation, window: int):
  """Stored pairs plus this pass's pairs. Position t sees the newest `window` of the pairs
  completed by then: the in-pass pairs whose next token is at or before it, then the stored
  ones. Returns keys [P, D], next tokens [P], visibility [T, P]."""
  keys_T, next_T, pos_T, ok_T = pass_pairs(state.pending, state.pending_ok, obs)
  keys = jnp.concatenate([state.keys, unit(keys_T.astype(jnp.float32))])
  nexts = jnp.concatenate([state.next_tokens, next_T])
  T, W = obs.tokens.shape[0], state.filled.shape[0]
  done_TxP = jnp.concatenate([
      jnp.broadcast_to(state.filled[None, :], (T, W)),
      (pos_T[None, :] <= obs.positions[:, None]) & ok_T[None, :]], axis=1)
  newer_or_same_TxP = jnp.flip(jnp.cumsum(jnp.flip(done_TxP, 1), axis=1), 1)
  return keys, nexts, done_TxP & (newer_or_same_TxP <= window)
