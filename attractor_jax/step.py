"""The one pure step: `logits, cache, state = step(params, tokens, positions, cache, state)`.

The decoder's host layer adds `state.feedback` after its attention sublayer and hands its
attention output back; the attractor update then computes the feedback for the *next* pass.
"""

from __future__ import annotations

import functools

import jax

from attractor_jax import attractor
from attractor_jax.attractor import AttractorConfig
from attractor_jax.transformer import Decoder, KVCache


def tapped_step(params, tokens_BxT, positions_BxT, cache: KVCache | None, state, *,
                decoder: Decoder, cfg: AttractorConfig):
  """One pass for a batch; `state` has a leading batch axis (None when the layer is off).

  Returns (logits [B,T,V], cache, state, info or None, taps).
  """
  if not cfg.enabled:
    logits, cache, taps = decoder.apply({"params": params}, tokens_BxT, positions_BxT, cache,
                                        method=Decoder.tapped)
    return logits, cache, state, None, taps
  logits, cache, taps = decoder.apply(
      {"params": params}, tokens_BxT, positions_BxT, cache, feedback_BxD=state.feedback,
      host_layer=cfg.layer, method=Decoder.tapped)
  x_BxD = jax.vmap(functools.partial(attractor.pool, how=cfg.pool))(taps.attn_out_BxTxD)
  state, info = jax.vmap(functools.partial(attractor.update, cfg))(state, x_BxD)
  return logits, cache, state, info, taps


def step(params, tokens_BxT, positions_BxT, cache, state, *, decoder: Decoder,
         cfg: AttractorConfig):
  """The contract of DESIGN.md: (logits, cache, state)."""
  logits, cache, state, _, _ = tapped_step(params, tokens_BxT, positions_BxT, cache, state,
                                           decoder=decoder, cfg=cfg)
  return logits, cache, state


def make_step(decoder: Decoder, cfg: AttractorConfig):
  """`step` jitted for one decoder and config, with the cache and state donated."""
  return jax.jit(functools.partial(step, decoder=decoder, cfg=cfg), donate_argnums=(3, 4))


