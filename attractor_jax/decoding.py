"""Decoding, for one row or many: the prompt's pass, the decode loop, and teacher-forced
extension after a run.

    rows = prefill(engine, params, prompts_BxT, init_keys_B, sample_keys_B, temperature,
                   top_p, eos_id, cache_len=..., buffer=...)             # token 0 of each row
    rows = decode(engine, params, rows, sample_keys_B, num_tokens, temperature, top_p, eos_id)

`aj.generate` is one row and a seed sweep many, through the same two programs. Prompts of
different lengths are left-aligned (`prefill_left_aligned`): each length's rows are
prefilled into the slots that end where the longest prompt ends, and the slots before a
row's prompt are never read (`Decoder.tapped`), so a row decodes as it would alone.
The sampling key of token t is `fold_in(sample_key, t)`: runs resume exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import forcing
from attractor_jax.engine import Engine, positions_of
from attractor_jax.sampling import SamplingState, sample_tokens
from attractor_jax.transformer import init_cache


@functools.partial(jax.jit, static_argnames=("engine", "cache_len", "buffer", "shared_prompt"))
def prefill(engine: Engine, params, prompts_BxT, init_keys_B, sample_keys_B, temperature, top_p,
            eos_id, memory_state=None, slot=0, *, cache_len: int, buffer: int,
            shared_prompt: bool = False) -> SamplingState:
  """Each row's prompt as one pass, written from `slot` on into a fresh `cache_len`-slot
  cache, and its token 0 sampled into `buffer`-token outputs.

  `memory_state=None` starts fresh memories: with a silent start from this pass's attention
  outputs (the pass is the plain model's); otherwise from a plain pass of their own, and
  their feedback enters this one. A given state [B, ...] feeds back into the prompt.
  `shared_prompt` promises that every row's prompt is row 0's: with a silent start the
  prompt's pass then runs once for all rows.
  """
  B, T = prompts_BxT.shape
  positions_BxT = positions_of(prompts_BxT)
  if memory_state is None and not engine.silent_start:
    memory_state = engine.fresh_states(params, init_keys_B, prompts_BxT)
  feedback_BxD = engine.feedback(memory_state)
  once = shared_prompt and feedback_BxD is None
  n = 1 if once else B
  passed = engine.run_pass(params, prompts_BxT[:n], positions_BxT[:n],
                           init_cache(engine.config, n, cache_len, engine.dtype), feedback_BxD,
                           slot=slot, last_logits_only=True)
  if once:
    passed = jax.tree.map(lambda a: jnp.broadcast_to(a, (B, *a.shape[1:])), passed)
  if engine.memory is not None and memory_state is None:
    memory_state = engine.fresh_states(params, init_keys_B, prompt_attn_BxTxD=passed[2].attn_out)
  out = engine.remember(params, prompts_BxT, positions_BxT, passed, memory_state, feedback_BxD,
                        last_logits_only=True)
  keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(sample_keys_B, 0)
  token_B = sample_tokens(out.logits[:, -1], keys_B, temperature, top_p)
  first = lambda r: jnp.zeros((B, buffer, *r.shape[1:]), r.dtype).at[:, 0].set(r)
  every = lambda value: jnp.full((B,), value, jnp.int32)
  return SamplingState(
      tokens=first(token_B), count=every(1), trace=jax.tree.map(first, engine.trace_rows(out)),
      token=token_B, position=every(T), slot=every(slot + T), t=every(1),
      done=token_B == eos_id, cache=out.cache, memory_state=out.memory_state)


def sample(engine: Engine, params, prompts_BxT, init_keys_B, sample_keys_B, num_tokens,
           temperature, top_p, eos_id, *, cache_len: int, buffer: int,
           shared_prompt: bool = False) -> SamplingState:
  """`prefill`, then `decode` in phases from the prompts' end: rows of one prompt length."""
  rows = prefill(engine, params, prompts_BxT, init_keys_B, sample_keys_B, temperature, top_p,
                 eos_id, cache_len=cache_len, buffer=buffer, shared_prompt=shared_prompt)
  return decode(engine, params, rows, sample_keys_B, num_tokens, temperature, top_p, eos_id,
                phases_from=prompts_BxT.shape[1])


def prefill_left_aligned(engine: Engine, params, prompts: list[np.ndarray], init_keys_B,
                         sample_keys_B, temperature, top_p, eos_id, *, cache_len: int,
                         buffer: int) -> SamplingState:
  """`prefill` for prompts of different lengths: the rows of each length in one call, their
  prompts ending at the longest one's end, then joined in the given order."""
  width = max(len(p) for p in prompts)
  lengths = np.array([len(p) for p in prompts])
  parts, order = [], []
  for length in np.unique(lengths):
    rows = np.flatnonzero(lengths == length)
    parts.append(prefill(engine, params, jnp.asarray(np.stack([prompts[r] for r in rows])),
                         init_keys_B[rows], sample_keys_B[rows], temperature, top_p, eos_id,
                         None, width - int(length), cache_len=cache_len, buffer=buffer))
    order.extend(rows)
  back = np.argsort(np.array(order))
  return jax.tree.map(lambda *a: jnp.concatenate(a)[back], *parts)


@functools.partial(jax.jit, static_argnames=("engine", "phases_from"), donate_argnames=("rows",))
def decode(engine: Engine, params, rows: SamplingState, sample_keys_B, num_tokens, temperature,
           top_p, eos_id, *, phases_from: int | None = None) -> SamplingState:
  """Samples until every row is done (EOS) or has `num_tokens` tokens, one pass per token.

  All rows write one slot per pass. A finished row's tokens, count, memory and trace stop,
  while its cache goes on being written (it is never read again): selecting between old and
  new caches in every step would copy them.

  `phases_from` (the first slot decoded, static; None: one loop): the loop runs in phases
  over the cache's first 128, 256, 512, ... slots above it (`read_bounds`), attention
  reading only the phase's slots, so a row's attention costs the slots written so far
  (rounded up), not the whole cache. Each phase compiles the pass once more: worth it for
  many rows, where attention is a large share.
  """
  B = rows.done.shape[0]

  def going(s: SamplingState):
    return jnp.any(~s.done & (s.count < num_tokens))

  def one_token(s: SamplingState) -> SamplingState:
    out = engine.step(params, s.token[:, None], s.position[:, None], s.cache, s.memory_state,
                      slot=s.slot[0])
    keys_B = jax.vmap(jax.random.fold_in)(sample_keys_B, s.t)
    token_B = sample_tokens(out.logits[:, -1], keys_B, temperature, top_p)
    live_B = ~s.done
    keep = lambda new, old: jnp.where(live_B.reshape((B,) + (1,) * (new.ndim - 1)), new, old)
    token_B = jnp.where(live_B, token_B, eos_id)
    at = jnp.max(s.count)  # every row still going has written this many tokens
    write = lambda buf, r: buf.at[:, at].set(keep(r, buf[:, at]))
    return SamplingState(
        tokens=write(s.tokens, token_B), count=s.count + live_B,
        trace=jax.tree.map(write, s.trace, engine.trace_rows(out)), token=token_B,
        position=s.position + 1, slot=s.slot + 1, t=s.t + live_B,
        done=s.done | (token_B == eos_id), cache=out.cache,
        memory_state=jax.tree.map(keep, out.memory_state, s.memory_state))

  if phases_from is None:
    return jax.lax.while_loop(going, one_token, rows)
  for bound in read_bounds(rows.cache.max_len, above=phases_from):
    inside = lambda s, bound=bound: going(s) & (s.slot[0] < bound)
    rows = _on_first_slots(rows, bound, lambda s: jax.lax.while_loop(inside, one_token, s))
  return rows


@functools.partial(jax.jit, static_argnames=("engine",))
def extend(engine: Engine, params, rows: SamplingState, tokens_BxJ, read_at_B):
  """Teacher-forces each row's last sampled token, then its `tokens`, after its run (its
  cache and memory carried on, one pass per token); returns the log-probs [B, V] of what
  follows sequence index `read_at` (0 is the last sampled token, j the tokens' j-th)."""
  seq_BxJ = jnp.concatenate([rows.token[:, None], tokens_BxJ], axis=1)

  def keep(out, j, kept_BxV):
    return jnp.where((j == read_at_B)[:, None], out.logits[:, -1], kept_BxV), None

  *_, kept_BxV, _ = forcing.read(
      engine, params, seq_BxJ, rows.position, rows.slot[0], rows.cache, rows.memory_state,
      jnp.zeros((seq_BxJ.shape[0], engine.config.vocab_size), jnp.float32), keep)
  return jax.nn.log_softmax(kept_BxV)


def with_buffers(engine: Engine, params, rows: SamplingState, buffer: int) -> SamplingState:
  """`rows` (rows that go on, e.g. a restored run) with empty `buffer`-token outputs."""
  B = rows.done.shape[0]
  return rows.replace(
      tokens=jnp.zeros((B, buffer), jnp.int32), count=jnp.zeros((B,), jnp.int32),
      trace=jax.tree.map(lambda r: jnp.zeros((B, buffer, *r.shape), r.dtype),
                         engine.trace_row_shape(params)))


def read_bounds(slots: int, above: int = 0, first: int = 128) -> list[int]:
  """The decode phases' slot counts: `first`, doubling, below `slots`, then `slots`; only
  those above `above` (the first slot decoded: a phase below it would never run)."""
  bounds = [first]
  while bounds[-1] * 2 < slots:
    bounds.append(bounds[-1] * 2)
  return [b for b in bounds if above < b < slots] + [slots]


def _on_first_slots(rows: SamplingState, bound: int, run) -> SamplingState:
  """`run(rows)` with the cache cut to its first `bound` slots (a copy), then written back."""
  cache = rows.cache
  if bound == cache.max_len:
    return run(rows)
  out = run(rows.replace(cache=jax.tree.map(lambda c: c[..., :bound, :], cache)))
  back = lambda c, part: jax.lax.dynamic_update_slice_in_dim(c, part, 0, axis=c.ndim - 2)
  return out.replace(cache=jax.tree.map(back, cache, out.cache))
