"""Multiple-choice scoring by log-likelihood, with the attractor layer on, for items x seeds.

Each context is left-padded with newlines to the next multiple of `PAD_SEGMENTS` segments
(its length bucket: one compilation per bucket; the pad depends on the item alone, so it is
the same for every preset and batch size and paired comparisons stay fair); items of one
bucket are scored in batches and read in passes of `segment` tokens, as in METHOD.md's
segment mode; every choice is then scored as one more pass from the same cache and memory. Returns
the summed log-probability of each choice's tokens and whether every one of them is the
model's argmax (LAMBADA's greedy accuracy).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.generation import left_padded, seed_keys
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.sampling import init_from_prompt
from attractor_jax.step import step
from attractor_jax.transformer import Decoder, init_cache


PAD_SEGMENTS = 4
ROWS_PER_CALL = 128  # sequences (items x seeds) per call when the batch is not given


def choice_count(choices: list[tuple[str, ...]]) -> int:
  """The number of choices every item has; refuses items that differ."""
  counts = {len(cs) for cs in choices}
  if len(counts) != 1:
    raise InputError(f"items have different numbers of choices {sorted(counts)}: use one count")
  return counts.pop()


def pack(model: Model, contexts: list[str], choices: list[tuple[str, ...]], multiple: int,
         choice_len: int | None = None):
  """Tokenizes items: contexts [I, L] (left-padded to a multiple of `multiple`), choices
  [I, C, J] + mask (right-padded to `choice_len` tokens, default their longest)."""
  ch = [[model.tokenizer.encode(c) for c in cs] for cs in choices]
  J = choice_len or max(len(c) for cs in ch for c in cs)
  ctx_IxL = left_padded(model, contexts, multiple)
  C = choice_count(choices)
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
                                  state, decoder=decoder, cfg=cfg, last_logits_only=True)
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
                  segment: int = 16, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Per choice, float64 log-likelihood and bool "every token is the argmax", both [seeds,
  items, choices], items in the given order. Each context is padded to its own length bucket
  (whatever the batch); items of one bucket are scored up to `batch` at a time (fewer when
  the bucket holds fewer: the next power of two)."""
  attractor.check_model(model.config)
  n_choices = choice_count(choices)
  tok, multiple = model.tokenizer, segment * PAD_SEGMENTS
  bucket_I = np.array([-(-len(tok.encode(c)) // multiple) for c in contexts])
  choice_len = max(len(tok.encode(c)) for cs in choices for c in cs)
  keys = jnp.stack([seed_keys(s)[0] for s in range(seeds)])
  batch = batch or max(1, min(len(contexts), ROWS_PER_CALL // seeds))
  logprobs = np.zeros((seeds, len(contexts), n_choices))
  greedy = np.zeros(logprobs.shape, bool)
  for bucket in np.unique(bucket_I):
    items = np.flatnonzero(bucket_I == bucket)
    size = min(batch, 1 << (len(items) - 1).bit_length())  # a power of two: few shapes
    for i in range(0, len(items), size):
      rows = items[i:i + size]
      padded = np.concatenate([rows, np.repeat(rows[-1:], size - len(rows))])
      packed = pack(model, [contexts[r] for r in padded], [choices[r] for r in padded],
                    multiple, choice_len)
      lp, hit = _choice_scores(model.params, *map(jnp.asarray, packed), keys,
                               decoder=model.decoder, cfg=attractor, segment=segment)
      logprobs[:, rows] = np.asarray(lp, np.float64)[:, :len(rows)]
      greedy[:, rows] = np.asarray(hit)[:, :len(rows)]
  return logprobs, greedy


def choice_logprobs(model: Model, contexts, choices, *, attractor: Memory, seeds: int,
                    segment: int = 16, batch: int | None = None) -> np.ndarray:
  """Log-likelihood of every choice: float64 [seeds, items, choices]."""
  return choice_scores(model, contexts, choices, attractor=attractor, seeds=seeds,
                       segment=segment, batch=batch)[0]
