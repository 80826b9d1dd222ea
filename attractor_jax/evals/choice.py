"""Multiple-choice scoring by log-likelihood, with a memory on, for items x seeds.

Each context is left-padded with newlines to the next multiple of `PAD_SEGMENTS` segments
(its length bucket: one compilation per bucket; the pad depends on the item alone, so it is
the same for every preset and batch size and paired comparisons stay fair); items of one
bucket are scored in batches and read in passes of `segment` tokens, as in docs/method.md's
segment mode; every choice is then scored as one more pass from the same cache and memory. Returns
the summed log-probability of each choice's tokens and whether every one of them is the
model's argmax (LAMBADA's greedy accuracy).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from attractor_jax import forcing
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.prompts import bos, left_padded, text_ids
from attractor_jax.seeds import stacked_keys
from attractor_jax.validation import check_int


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
  ch = [[text_ids(model, c) for c in cs] for cs in choices]
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


class ChoiceScores(NamedTuple):
  """`choice_scores`' answer, items in the given order."""

  logprob: np.ndarray  # [seeds, items, choices] float64: the choice's summed log-likelihood
  greedy: np.ndarray  # [seeds, items, choices] bool: every token of the choice is the argmax
  activity: dict[str, np.ndarray]  # {name: [seeds, items]}: the memory's activity over the
  # context passes (`Memory.activity`, e.g. the attractor's "gate_open"); {} without one

  def activity_share(self, name: str) -> float | None:
    """`name`'s activity over seeds and items (None: the memory does not report it)."""
    return None if name not in self.activity else float(self.activity[name].mean())


def choice_scores(model: Model, contexts, choices, *, memory: Memory | None, seeds: int,
                  segment: int = 16, batch: int | None = None) -> ChoiceScores:
  """Scores every choice after its context, the memory reading the context first.

  Each context is padded to its own length bucket (whatever the batch); items of one bucket
  are scored up to `batch` at a time (fewer when the bucket holds fewer: the next power of
  two).

  Args:
    contexts: one text per item.
    choices: per item, a tuple of choice texts (one count for all items).
    memory: a memory config or preset; None: no memory.
    seeds: seeds 0..seeds-1 (the memory's initial state).
    segment: tokens per pass while reading the context.
    batch: items per call (default: about 128 sequences of items x seeds).
  Returns:
    ChoiceScores: per choice, the log-likelihood and "every token is the argmax"; per item,
    the memory's activity over its context passes.
  """
  engine = model.engine(memory)
  check_int("seeds", seeds, 1)
  check_int("segment", segment, 1)
  n_choices = choice_count(choices)
  multiple, start = segment * PAD_SEGMENTS, len(bos(model))
  bucket_I = np.array([-(-(start + len(text_ids(model, c))) // multiple) for c in contexts])
  choice_len = max(len(text_ids(model, c)) for cs in choices for c in cs)
  keys, _ = stacked_keys(range(seeds))
  batch = batch or max(1, min(len(contexts), ROWS_PER_CALL // seeds))
  logprobs = np.zeros((seeds, len(contexts), n_choices))
  greedy = np.zeros(logprobs.shape, bool)
  activity = {}
  for bucket in np.unique(bucket_I):
    items = np.flatnonzero(bucket_I == bucket)
    size = min(batch, 1 << (len(items) - 1).bit_length())  # a power of two: few shapes
    for i in range(0, len(items), size):
      rows = items[i:i + size]
      padded = np.concatenate([rows, np.repeat(rows[-1:], size - len(rows))])
      packed = pack(model, [contexts[r] for r in padded], [choices[r] for r in padded],
                    multiple, choice_len)
      per_seed = lambda a: jnp.tile(jnp.asarray(a), (seeds,) + (1,) * (a.ndim - 1))
      lp, hit, act, _, _ = forcing.choice_scores(engine, model.params, *map(per_seed, packed),
                                           keys[np.repeat(np.arange(seeds), size)],
                                           segment=segment)
      seeds_first = lambda a: np.asarray(a).reshape(seeds, size, *a.shape[1:])[:, :len(rows)]
      logprobs[:, rows] = seeds_first(lp).astype(np.float64)
      greedy[:, rows] = seeds_first(hit)
      for name, v in act.items():
        activity.setdefault(name, np.zeros(logprobs.shape[:2]))[:, rows] = seeds_first(v)
  return ChoiceScores(logprobs, greedy, activity)


def choice_logprobs(model: Model, contexts, choices, *, memory: Memory | None, seeds: int,
                    segment: int = 16, batch: int | None = None) -> np.ndarray:
  """Log-likelihood of every choice: float64 [seeds, items, choices] (see `choice_scores`)."""
  return choice_scores(model, contexts, choices, memory=memory, seeds=seeds,
                       segment=segment, batch=batch).logprob
