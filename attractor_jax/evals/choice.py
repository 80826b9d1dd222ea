"""Multiple-choice scoring by log-likelihood, with the attractor layer on, for items x seeds.

Each item's context is left-padded with newlines to one length L (one compilation; the pad is
the same for every preset, so paired comparisons stay fair) and read in passes of `segment`
tokens, as in METHOD.md's segment mode; every choice is then scored as one more pass from the
same cache and memory. Returns the summed log-probability of each choice's tokens and
whether every one of them is the model's argmax (LAMBADA's greedy accuracy).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.sampling import init_from_prompt
from attractor_jax.step import step
from attractor_jax.transformer import Decoder, init_cache


def pack(model: Model, contexts: list[str], choices: list[tuple[str, ...]], segment: int):
  """Tokenizes items: contexts [I, L] (left-padded), choices [I, C, J] + mask (right-padded)."""
  tok = model.tokenizer
  pad = tok.encode("\n")[0]
  ctx = [tok.encode(c) for c in contexts]
  ch = [[tok.encode(c) for c in cs] for cs in choices]
  n_choices = {len(cs) for cs in ch}
  if len(n_choices) != 1:
    raise InputError(f"items have different numbers of choices {sorted(n_choices)}: use one count")
  L = -(-max(map(len, ctx)) // segment) * segment
  J = max(len(c) for cs in ch for c in cs)
  ctx_IxL = np.full((len(ctx), L), pad, np.int32)
  for i, c in enumerate(ctx):
    ctx_IxL[i, L - len(c):] = c
  C = n_choices.pop()
  ch_IxCxJ = np.zeros((len(ch), C, J), np.int32)
  mask_IxCxJ = np.zeros((len(ch), C, J), bool)
  for i, cs in enumerate(ch):
    for c, ids in enumerate(cs):
      ch_IxCxJ[i, c, :len(ids)] = ids
      mask_IxCxJ[i, c, :len(ids)] = True
  return ctx_IxL, ch_IxCxJ, mask_IxCxJ


@functools.partial(jax.jit, static_argnames=("decoder", "cfg", "segment"))
def _choice_scores(params, ctx_IxL, ch_IxCxJ, mask_IxCxJ, keys_S, *, decoder: Decoder,
                     cfg: Memory, segment: int):
  L, J = ctx_IxL.shape[1], ch_IxCxJ.shape[2]

  def one_item(key, ctx_L, ch_CxJ, mask_CxJ):
    state = None
    if cfg.enabled:
      state = jax.tree.map(lambda a: a[None], init_from_prompt(
          params, ctx_L[None], jnp.arange(L)[None], key, decoder=decoder, cfg=cfg))
    cache = init_cache(decoder.config, 1, L + J, decoder.dtype)

    def read(carry, start):
      cache, state, _ = carry
      toks = jax.lax.dynamic_slice(ctx_L, (start,), (segment,))[None]
      logits, cache, state = step(params, toks, (start + jnp.arange(segment))[None], cache,
                                  state, decoder=decoder, cfg=cfg)
      return (cache, state, logits[0, -1]), None

    (cache, state, last_V), _ = jax.lax.scan(
        read, (cache, state, jnp.zeros((decoder.config.vocab_size,), jnp.float32)),
        jnp.arange(0, L, segment))

    def score(ch_J, mask_J):
      logits, _, _ = step(params, ch_J[None], (L + jnp.arange(J))[None], cache, state,
                          decoder=decoder, cfg=cfg)
      logp_JxV = jax.nn.log_softmax(jnp.concatenate([last_V[None], logits[0, :-1]]), axis=-1)
      logprob = jnp.sum(jnp.where(mask_J, jnp.take_along_axis(logp_JxV, ch_J[:, None], 1)[:, 0], 0.0))
      greedy = jnp.all(jnp.where(mask_J, jnp.argmax(logp_JxV, axis=-1) == ch_J, True))
      return logprob, greedy

    return jax.vmap(score)(ch_CxJ, mask_CxJ)

  per_seed = lambda key: jax.vmap(one_item, in_axes=(None, 0, 0, 0))(key, ctx_IxL, ch_IxCxJ,
                                                                        mask_IxCxJ)
  return jax.vmap(per_seed)(keys_S)


def choice_scores(model: Model, contexts, choices, *, attractor: Memory, seeds: int,
                  segment: int = 16, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Per choice, float64 log-likelihood and bool "every token is the argmax", both [seeds,
  items, choices] (items in batches of `batch`)."""
  from attractor_jax.generation import seed_keys

  attractor.check_model(model.config)
  ctx, ch, mask = pack(model, contexts, choices, segment)
  keys = jnp.stack([seed_keys(s)[0] for s in range(seeds)])
  logprobs, greedy = [], []
  for i in range(0, len(ctx), batch):
    sl = slice(i, i + batch)
    n = len(ctx[sl])
    padded = [np.concatenate([a[sl], np.repeat(a[sl][-1:], batch - n, 0)]) for a in (ctx, ch, mask)]
    lp, hit = _choice_scores(model.params, *map(jnp.asarray, padded), keys,
                             decoder=model.decoder, cfg=attractor, segment=segment)
    logprobs.append(np.asarray(lp, np.float64)[:, :n])
    greedy.append(np.asarray(hit)[:, :n])
  return np.concatenate(logprobs, axis=1), np.concatenate(greedy, axis=1)


def choice_logprobs(model: Model, contexts, choices, *, attractor: Memory, seeds: int,
                    segment: int = 16, batch: int = 16) -> np.ndarray:
  """Log-likelihood of every choice: float64 [seeds, items, choices]."""
  return choice_scores(model, contexts, choices, attractor=attractor, seeds=seeds,
                       segment=segment, batch=batch)[0]
