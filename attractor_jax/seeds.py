"""Seeds: a seed's two keys (memory init, sampling), and seed lists as the API takes them."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.validation import check_int


def seed_keys(seed: int):
  """(memory init key, sampling key) of a seed >= 0."""
  check_int("seed", seed, 0)
  init_key, sample_key = jax.random.split(jax.random.key(int(seed)))
  return init_key, sample_key


def stacked_keys(seeds: Sequence[int]):
  """(init keys [S], sampling keys [S]) of the seeds, stacked."""
  return tuple(jnp.stack(k) for k in zip(*(seed_keys(s) for s in seeds)))


def seed_list(seeds: int | Sequence[int]) -> list[int]:
  """A seed count n (-> 0..n-1) or an explicit list of seeds, validated."""
  is_int = lambda s: isinstance(s, (int, np.integer)) and not isinstance(s, bool)
  if is_int(seeds):
    check_int("seeds", seeds, 1)
    return list(range(int(seeds)))
  if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds \
      or not all(is_int(s) and s >= 0 for s in seeds):
    raise InputError(f"seeds={seeds!r}: pass a count >= 1 or a non-empty list of integers >= 0")
  return [int(s) for s in seeds]
