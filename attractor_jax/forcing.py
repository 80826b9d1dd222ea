"""Forced reads: given text fed to the model with a memory on, and scored.

One primitive, `read`, feeds tokens in passes of one token (as in generation) or of a
segment, carrying the KV cache and the memory state; teacher forcing, perplexity windows and
choice scores are built on it. Rows are the batch axis (seeds x items, or seeds).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from attractor_jax.engine import Engine
from attractor_jax.sampling import state_finite
from attractor_jax.transformer import init_cache


class Forced(NamedTuple):
  """Rows read token by token under teacher forcing (`teacher_forced`)."""

  nll: jax.Array  # [B, L-1]: -log p(token t+1 | tokens ..t), as the memory left the model
  info: Any  # the memory's update info per pass, [B, L, ...]; None without a memory
  feedback_ratio: jax.Array  # [B, L]: |feedback the pass received| / its residual norm
  produced_ratio: jax.Array  # [B, L]: |feedback it made for the next pass| / its residual norm
  finite: jax.Array  # [B]: no NaN or Inf in any pass's logits or the final memory state
  candidate_logprob: jax.Array | None  # [B, L, C]: log p(candidate c | tokens ..t); None unasked


def read(engine: Engine, params, tokens_BxL, start_B, slot, cache, memory_state, carry, emit,
         segment: int = 1):
  """Feeds `tokens_BxL` in passes of `segment` tokens (row b's token j at position
  start_B[b] + j, cache slot `slot` + j), carrying `cache` and `memory_state` on.

  `emit(out, j, carry) -> (carry, output)` keeps what the caller needs of each pass's `Step`
  (j: the pass's first token). Returns the final cache, memory state and carry, and the
  outputs stacked over passes.
  """

  def one_pass(c, j):
    cache, memory_state, carry = c
    tokens_BxT = jax.lax.dynamic_slice_in_dim(tokens_BxL, j, segment, axis=1)
    positions_BxT = start_B[:, None] + j + jnp.arange(segment)[None]
    out = engine.step(params, tokens_BxT, positions_BxT, cache, memory_state, slot=slot + j,
                      last_logits_only=True)
    carry, output = emit(out, j, carry)
    return (out.cache, out.memory_state, carry), output

  (cache, memory_state, carry), outputs = jax.lax.scan(
      one_pass, (cache, memory_state, carry), jnp.arange(0, tokens_BxL.shape[1], segment))
  return cache, memory_state, carry, outputs


def token_logp(logits_xV):
  """Log-probabilities over the vocabulary (last axis), in float32."""
  return jax.nn.log_softmax(logits_xV.astype(jnp.float32), axis=-1)


def token_nll(logits_BxTxV, targets_BxT):
  """-log p(target) per position, in float32."""
  return -jnp.take_along_axis(token_logp(logits_BxTxV), targets_BxT[..., None], axis=-1)[..., 0]


def _scored(engine: Engine, params, tokens_BxL, memory_state, candidates_C=None):
  """Reads each row token by token from position 0 in a fresh cache, scoring every next
  token: (the final memory state, Forced)."""
  B, L = tokens_BxL.shape

  def score(out, pos, _):
    logp_BxV = token_logp(out.logits[:, -1])
    target_B = tokens_BxL[:, jnp.minimum(pos + 1, L - 1)]
    nll_B = -jnp.take_along_axis(logp_BxV, target_B[:, None], axis=-1)[:, 0]
    finite_B = jnp.all(jnp.isfinite(out.logits), axis=(1, 2))
    candidates = None if candidates_C is None else logp_BxV[:, candidates_C]
    return None, (nll_B, out.info, out.feedback_ratio, out.produced_ratio, finite_B, candidates)

  cache = init_cache(engine.config, B, L, engine.dtype)
  _, memory_state, _, (nll, info, ratio, produced, finite, candidates) = read(
      engine, params, tokens_BxL, jnp.zeros((B,), jnp.int32), 0, cache, memory_state, None, score)
  rows_first = lambda tree: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)
  finite_B = jnp.all(finite, axis=0)
  if memory_state is not None:
    finite_B &= jax.vmap(state_finite)(memory_state)
  return memory_state, Forced(nll=nll.T[:, :-1], info=rows_first(info), feedback_ratio=ratio.T,
                              produced_ratio=produced.T, finite=finite_B, candidate_logprob=rows_first(candidates))


def activity(engine: Engine, info_BxLx, passes_BxL=None):
  """The memory's per-pass activity (`Memory.activity`) of each row, averaged over its passes
  (those `passes_BxL` marks, all by default): {name: [B]} ({} without a memory)."""
  if engine.memory is None:
    return {}
  per_pass = jax.vmap(jax.vmap(engine.memory.activity))(info_BxLx)
  if passes_BxL is None:
    return {name: jnp.mean(v, axis=1) for name, v in per_pass.items()}
  return {name: jnp.sum(jnp.where(passes_BxL, v, 0.0), axis=1) / jnp.sum(passes_BxL, axis=1)
          for name, v in per_pass.items()}


@functools.partial(jax.jit, static_argnames=("engine", "prompt_len"))
def teacher_forced(engine: Engine, params, tokens_BxL, init_keys_B, candidates_C=None,
                   memory_state=None, *, prompt_len: int) -> Forced:
  """Reads each row token by token, one pass per token as in generation, each with a fresh
  memory (initialised from its first `prompt_len` tokens' attention outputs) unless
  `memory_state` [B, ...] is given, and scores every next token. With `candidates_C` (token
  ids), also every position's log-probability of each candidate: a multiple-choice answer
  scored from one row instead of one per choice.
  """
  if memory_state is None:
    memory_state = engine.fresh_states(params, init_keys_B, tokens_BxL[:, :prompt_len])
  return _scored(engine, params, tokens_BxL, memory_state, candidates_C)[1]


@functools.partial(jax.jit, static_argnames=("engine",))
def stepwise_nll(engine: Engine, params, windows_WxL, init_keys_B, prompt_attn_TxD=None):
  """Scores windows token by token with the memory on, one row per seed.

  Each pass is one token, as in generation; the KV cache restarts at every window while the
  memory's state carries over (the persistent memory under test). Returns each row's NLL sum
  per window [B, W] and its activity per window ({name: [B, W]}, `Memory.activity` averaged
  over the window's passes).
  """
  B = init_keys_B.shape[0]
  prompt_attn = None if prompt_attn_TxD is None else jnp.broadcast_to(
      prompt_attn_TxD, (B, *prompt_attn_TxD.shape))
  memory_state = engine.fresh_states(params, init_keys_B, prompt_attn_BxTxD=prompt_attn)

  def one_window(memory_state, window_L):
    rows_BxL = jnp.broadcast_to(window_L, (B, window_L.shape[0]))
    memory_state, forced = _scored(engine, params, rows_BxL, memory_state)
    return memory_state, (forced.nll.sum(axis=1), activity(engine, forced.info))

  _, (nll_WxB, activity_WxB) = jax.lax.scan(one_window, memory_state, windows_WxL)
  return nll_WxB.T, {name: v.T for name, v in activity_WxB.items()}


@functools.partial(jax.jit, static_argnames=("engine",))
def carried(engine: Engine, params, windows_BxWxL, memory_state) -> Forced:
  """Reads each row's W windows in order, token by token: the KV cache restarts at every
  window while the memory state carries over. Forced with a window axis after the row axis
  ([B, W, L-1] NLL, [B, W, L] ratios; `info` the memory's activity per window, {name:
  [B, W]} as `activity` gives it; `candidate_logprob` None)."""

  def one_window(state, window_BxL):
    state, forced = _scored(engine, params, window_BxL, state)
    return state, forced._replace(info=activity(engine, forced.info))

  _, forced = jax.lax.scan(one_window, memory_state, jnp.swapaxes(windows_BxWxL, 0, 1))
  windows_second = lambda a: None if a is None else jnp.swapaxes(a, 0, 1)
  return Forced(nll=windows_second(forced.nll), info=jax.tree.map(windows_second, forced.info),
                feedback_ratio=windows_second(forced.feedback_ratio),
                produced_ratio=windows_second(forced.produced_ratio),
                finite=jnp.all(forced.finite, axis=0), candidate_logprob=None)


@functools.partial(jax.jit, static_argnames=("engine",))
def window_nll(engine: Engine, params, tokens_BxL):
  """Summed next-token NLL of each row (L-1 predictions), one plain pass: [B]."""
  logits = engine.forward(params, tokens_BxL)
  return token_nll(logits[:, :-1], tokens_BxL[:, 1:]).sum(axis=-1)


@functools.partial(jax.jit, static_argnames=("engine", "segment"))
def choice_scores(engine: Engine, params, contexts_BxL, choices_BxCxJ, mask_BxCxJ, init_keys_B,
                  memory_state=None, *, segment: int):
  """Per row (an item and a seed) and choice: the summed log-probability of the choice's
  tokens and whether each is the argmax, [B, C] each; per row, the memory's activity over the
  context passes ({name: [B]}) and its realised and received sizes (`Step.produced_ratio`,
  `Step.feedback_ratio`, [B] each, their means over those passes). The context is read in
  `segment`-token passes from `memory_state` (None: a fresh memory); each choice is then one
  more pass from that cache and state.
  """
  B, L = contexts_BxL.shape
  J = choices_BxCxJ.shape[2]
  if memory_state is None:
    memory_state = engine.fresh_states(params, init_keys_B, contexts_BxL)
  cache = init_cache(engine.config, B, L + J, engine.dtype)

  def last_logits(out, j, _):
    activity = {} if out.info is None else jax.vmap(engine.memory.activity)(out.info)
    return out.logits[:, -1], (activity, out.produced_ratio, out.feedback_ratio)

  cache, memory_state, last_BxV, (activity_PxB, produced_PxB, fed_PxB) = read(
      engine, params, contexts_BxL, jnp.zeros((B,), jnp.int32), 0, cache, memory_state,
      jnp.zeros((B, engine.config.vocab_size), jnp.float32), last_logits, segment)

  def score(choice_BxJ, mask_BxJ):
    positions = jnp.broadcast_to(L + jnp.arange(J), (B, J))
    logits = engine.step(params, choice_BxJ, positions, cache, memory_state, slot=L).logits
    logp_BxJxV = token_logp(jnp.concatenate([last_BxV[:, None], logits[:, :-1]], axis=1))
    picked_BxJ = jnp.take_along_axis(logp_BxJxV, choice_BxJ[..., None], axis=-1)[..., 0]
    hit_BxJ = jnp.argmax(logp_BxJxV, axis=-1) == choice_BxJ
    return (jnp.sum(jnp.where(mask_BxJ, picked_BxJ, 0.0), axis=1),
            jnp.all(jnp.where(mask_BxJ, hit_BxJ, True), axis=1))

  logprob_BxC, greedy_BxC = jax.vmap(score, in_axes=1, out_axes=1)(choices_BxCxJ, mask_BxCxJ)
  return (logprob_BxC, greedy_BxC, {name: v.mean(axis=0) for name, v in activity_PxB.items()},
          produced_PxB.mean(axis=0), fed_PxB.mean(axis=0))
