"""The pass: one frozen engine per (model config, memory, dtype), and its `step`.

    engine = model.engine(memory)                                  # or Engine(config, memory)
    out = engine.step(params, tokens_BxT, positions_BxT, cache, memory_state)   # -> Step

An engine's fields are static and hashable: the programs that drive it take it as a static
argument and compile once per engine and input shape. Everything that changes (params,
tokens, the KV cache, the memory state, keys) goes in as arrays and comes back. Rows are the
batch axis B everywhere: a memory state holds one row per sequence, and the memory's own
methods, written for one sequence, are vmapped over it. Two modules drive the pass:
`decoding` (prompt pass, decode loop, extension) and `forcing` (text read and scored).
docs/glossary.md names every axis letter.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from attractor_jax.config import ModelConfig
from attractor_jax.memories.base import Memory, Observation, residual_norm
from attractor_jax.sampling import Trace, state_finite
from attractor_jax.transformer import Decoder, KVCache, Taps, init_cache


class Step(NamedTuple):
  """One pass for a batch of rows: what `Engine.step` returns."""

  logits: jax.Array  # [B, T, V] float32 ([B, 1, V] with last_logits_only)
  cache: KVCache | None
  memory_state: Any  # the memory state after the pass, [B, ...]; None without a memory
  info: Any  # what the memory's update saw, [B, ...]; None without a memory
  taps: Taps
  feedback_ratio: jax.Array  # [B]: |feedback this pass received| / the host layer's residual
  # norm (`memories.base.residual_norm`); 0 without a memory
  produced_ratio: jax.Array  # [B]: |feedback the memory made for the next pass| / this pass's
  # residual norm: the memory's size in the frame controls use (`ControlConfig`)


class Pass(NamedTuple):
  """A public read of one pass (`Model.taps`)."""

  logits: jax.Array  # [B, T, V] float32
  attn_out: jax.Array  # [B, T, D]: the host layer's attention output (before the residual add)
  hidden: jax.Array  # [B, T, D]: the final normed hidden states (the unembedding's input)


@dataclasses.dataclass(frozen=True)
class Engine:
  """The decoder of `config` with `memory` on its host layer (None: the plain model)."""

  config: ModelConfig
  memory: Memory | None = None
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.memory is not None:
      self.memory.check_model(self.config)

  @property
  def decoder(self) -> Decoder:
    return Decoder(self.config, dtype=self.dtype)

  @property
  def silent_start(self) -> bool:
    """A fresh state adds nothing to the prompt's pass (no memory, or `Memory.starts_silent`)."""
    return self.memory is None or self.memory.starts_silent

  def step(self, params, tokens_BxT, positions_BxT, cache: KVCache | None, memory_state, *,
           slot=None, last_logits_only: bool = False) -> Step:
    """One pass: the host layer adds the memory's feedback, the memory reads the pass (mixing
    memories change its logits), then updates its state for the next pass.

    Args:
      tokens_BxT, positions_BxT: int32 ids and their positions.
      cache: the KV cache, or None for plain causal attention over the pass alone.
      memory_state: one row per sequence (None without a memory).
      slot: where the cache takes this pass (see `Decoder.tapped`; default: row 0's position).
      last_logits_only: return the last position's logits only ([B, 1, V]); the other
        positions are then not unembedded unless the memory uses logits.
    """
    feedback_BxD = self.feedback(memory_state)
    passed = self.run_pass(params, tokens_BxT, positions_BxT, cache, feedback_BxD, slot=slot,
                           last_logits_only=last_logits_only)
    return self.remember(params, tokens_BxT, positions_BxT, passed, memory_state, feedback_BxD,
                         last_logits_only)

  def feedback(self, memory_state):
    """What each row's next pass adds at the host layer, [B, D]; None without a memory or
    state."""
    if memory_state is None:
      return None
    return jax.vmap(self.memory.feedback)(memory_state)

  def run_pass(self, params, tokens_BxT, positions_BxT, cache, feedback_BxD, *, slot=None,
               last_logits_only: bool = False):
    """The decoder's pass, `feedback_BxD` entering at the memory's host layer (None: zero):
    (logits, cache, Taps)."""
    memory = self.memory
    if memory is None:
      return self.decoder.apply({"params": params}, tokens_BxT, positions_BxT, cache, slot=slot,
                                last_logits_only=last_logits_only, method=Decoder.tapped)
    return self.decoder.apply(
        {"params": params}, tokens_BxT, positions_BxT, cache, feedback_BxD=feedback_BxD,
        host_layer=memory.host_layer(self.config), closed_loop=memory.loop == "closed",
        last_logits_only=last_logits_only and not memory.uses_logits, slot=slot,
        method=Decoder.tapped)

  def remember(self, params, tokens_BxT, positions_BxT, passed, memory_state, feedback_BxD,
               last_logits_only: bool) -> Step:
    """The memory's half of `step`: it reads the pass `passed` (mixing memories change its
    logits) and updates `memory_state` for the next pass."""
    logits, cache, taps = passed
    if self.memory is None:
      zeros_B = jnp.zeros(logits.shape[:1], jnp.float32)
      return Step(logits, cache, None, None, taps, zeros_B, zeros_B)
    obs = Observation(tokens=tokens_BxT, positions=positions_BxT, attn_out=taps.attn_out,
                      residual=taps.residual, hidden=taps.hidden, logits=logits)
    per_row = functools.partial(jax.vmap, in_axes=(0, 0, None))
    logits = per_row(self.memory.read)(memory_state, obs, params)
    memory_state, info = per_row(self.memory.observe)(memory_state, obs, params)
    return Step(logits[:, -1:] if last_logits_only else logits, cache, memory_state, info, taps,
                _norm_ratio(feedback_BxD, taps.residual),
                _norm_ratio(self.feedback(memory_state), taps.residual))

  def fresh_states(self, params, keys_B, prompts_BxT=None, prompt_attn_BxTxD=None):
    """A fresh memory state per row, [B, ...] (None without a memory). A memory that wants
    them sees each row's prompt attention outputs: `prompt_attn_BxTxD`, or those of a plain
    pass over `prompts_BxT` (neither: none)."""
    memory = self.memory
    if memory is None:
      return None
    if not memory.uses_prompt:
      return jax.vmap(lambda key: memory.fresh_state(self.config, key))(keys_B)
    if prompt_attn_BxTxD is None and prompts_BxT is not None:
      prompt_attn_BxTxD = self.run_pass(params, prompts_BxT, positions_of(prompts_BxT), None,
                                        None)[2].attn_out
    if prompt_attn_BxTxD is None:
      return jax.vmap(lambda key: memory.fresh_state(self.config, key))(keys_B)
    return jax.vmap(lambda key, attn: memory.fresh_state(self.config, key, attn))(
        keys_B, prompt_attn_BxTxD)

  @functools.partial(jax.jit, static_argnames=("self",))
  def forward(self, params, tokens_BxT):
    """Logits [B, T, V] of one plain causal pass (no memory, no cache)."""
    logits, _ = self.decoder.apply({"params": params}, tokens_BxT, positions_of(tokens_BxT))
    return logits

  @functools.partial(jax.jit, static_argnames=("self", "layer"))
  def taps(self, params, tokens_BxT, memory_state=None, *, layer: int) -> Pass:
    """One causal pass tapping `layer`; with a memory state, its feedback enters there."""
    closed = memory_state is not None and self.memory.loop == "closed"
    logits, _, taps = self.decoder.apply(
        {"params": params}, tokens_BxT, positions_of(tokens_BxT),
        feedback_BxD=None if memory_state is None else self.feedback(memory_state),
        host_layer=layer, closed_loop=closed, method=Decoder.tapped)
    return Pass(logits, taps.attn_out, taps.hidden)

  def trace_rows(self, out: Step) -> Trace:
    """Each row's Trace entry for the pass `out` (its last position)."""
    finite_B = jnp.all(jnp.isfinite(out.logits), axis=(1, 2))
    hidden_BxD = out.taps.hidden[:, -1]
    if self.memory is None:
      return Trace(hidden=hidden_BxD, finite=finite_B)
    return Trace(hidden=hidden_BxD, info=out.info, feedback_ratio=out.feedback_ratio,
                 produced_ratio=out.produced_ratio, finite=finite_B & jax.vmap(state_finite)(out.memory_state))

  def trace_row_shape(self, params) -> Trace:
    """The shapes and dtypes of one row's Trace entry (one pass of one sequence)."""

    def one_pass(params):
      token = jnp.zeros((1, 1), jnp.int32)
      state = self.fresh_states(params, jax.random.key(0)[None],
                                prompt_attn_BxTxD=jnp.zeros((1, 1, self.config.width)))
      out = self.step(params, token, token, init_cache(self.config, 1, 1, self.dtype), state)
      return jax.tree.map(lambda a: a[0], self.trace_rows(out))

    return jax.eval_shape(one_pass, params)


def positions_of(tokens_BxT):
  """Positions 0..T-1 of every row: int32 [B, T]."""
  return jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)


def _norm_ratio(feedback_BxD, residual_BxTxD):
  """|feedback| / residual_norm(residual) per row (0 where the feedback is 0 or None)."""
  if feedback_BxD is None:
    return jnp.zeros(residual_BxTxD.shape[:1], jnp.float32)
  fb = jnp.linalg.norm(feedback_BxD.astype(jnp.float32), axis=-1)
  return fb / jnp.maximum(jax.vmap(residual_norm)(residual_BxTxD), 1e-30)
