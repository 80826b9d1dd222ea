"""The one pure step: `logits, cache, state = step(params, tokens, positions, cache, state)`.

`cfg` is any memory (`memories.base.Memory`; the attractor layer is one). The decoder's host
layer adds `cfg.feedback(state)` after its attention sublayer; the memory then reads the
pass (mixing memories change its logits) and updates its state for the *next* pass.
"""

from __future__ import annotations

import functools

import jax

from attractor_jax.memories.base import Memory, Observation
from attractor_jax.transformer import Decoder, KVCache


def tapped_step(params, tokens_BxT, positions_BxT, cache: KVCache | None, state, *,
                decoder: Decoder, cfg: Memory, last_logits_only: bool = False):
  """One pass for a batch; `state` has a leading batch axis (None when the memory is off).

  Returns (logits [B,T,V], cache, state, info or None, taps). With `last_logits_only` the
  logits are [B,1,V], the last position's; the unembedding then skips the other rows unless
  the memory uses logits.
  """
  if not cfg.enabled:
    logits, cache, taps = decoder.apply({"params": params}, tokens_BxT, positions_BxT, cache,
                                        last_logits_only=last_logits_only, method=Decoder.tapped)
    return logits, cache, state, None, taps
  logits, cache, taps = decoder.apply(
      {"params": params}, tokens_BxT, positions_BxT, cache, feedback_BxD=cfg.feedback(state),
      host_layer=cfg.layer, last_logits_only=last_logits_only and not cfg.uses_logits,
      method=Decoder.tapped)
  obs = Observation(tokens=tokens_BxT, positions=positions_BxT, attn_out=taps.attn_out_BxTxD,
                    hidden=taps.hidden_BxTxD, logits=logits)
  per_sequence = functools.partial(jax.vmap, in_axes=(0, 0, None))
  logits = per_sequence(cfg.read)(state, obs, params)
  state, info = per_sequence(cfg.observe)(state, obs, params)
  return (logits[:, -1:] if last_logits_only else logits), cache, state, info, taps


def step(params, tokens_BxT, positions_BxT, cache, state, *, decoder: Decoder, cfg: Memory,
         last_logits_only: bool = False):
  """The contract of DESIGN.md: (logits, cache, state); logits [B,1,V] when `last_logits_only`."""
  logits, cache, state, _, _ = tapped_step(params, tokens_BxT, positions_BxT, cache, state,
                                           decoder=decoder, cfg=cfg,
                                           last_logits_only=last_logits_only)
  return logits, cache, state


def make_step(decoder: Decoder, cfg: Memory):
  """`step` jitted for one decoder and memory, with the cache and state donated."""
  return jax.jit(functools.partial(step, decoder=decoder, cfg=cfg), donate_argnums=(3, 4))
