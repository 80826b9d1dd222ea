"""This machine's limits for a model, measured: the float32 matrix-multiply rate at the model's
own matrix shapes for a given number of rows, and the matrix-vector memory bandwidth.

A one-row decode step reads every weight once, so its limit is bandwidth; many rows (a seed
sweep, scoring) multiply the same weights by more rows, so their limit is compute.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(fn, *args, repeats: int) -> float:
  """Median wall seconds of `fn(*args)` over `repeats` calls, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def gemv_bandwidth_gbs(repeats: int = 10) -> float:
  """Bytes per second a large float32 NumPy matrix-vector product reads on this machine."""
  w = np.random.default_rng(0).random((8192, 16384), np.float32)
  v = np.ones(16384, np.float32)
  return w.nbytes / median_seconds(lambda: w @ v, repeats=repeats) / 1e9


def bytes_read_per_token(params) -> int:
  """Weight bytes one decode step reads: every matrix once, but of the embedding table only a
  row (the logits read the [D, V] "lm_head" matrix, a tied table's copy included)."""
  table = params["embed"]["embedding"]
  return (sum(a.nbytes for a in jax.tree.leaves(params))
          - table.nbytes + table.nbytes // table.shape[0])


def kernels(params) -> list[jax.Array]:
  """The [in, out] matrices one token goes through: every layer's kernels and the output."""
  return [a for path, a in jax.tree_util.tree_leaves_with_path(params)
          if jax.tree_util.keystr(path).endswith("['kernel']") and a.ndim == 2]


def flops_per_token(params) -> int:
  """2 x the weights of every matrix a token is multiplied by (attention over the cache and
  the elementwise work are not counted)."""
  return sum(2 * a.size for a in kernels(params))


def matmul_gflops(params, rows: int, repeats: int = 5) -> float:
  """GFLOP/s of `rows` rows through one layer's matrices and the output matrix, jitted, in
  float32: the rate the model's own shapes reach at this row count."""
  mats = kernels(params["layers"][0]) + kernels({"lm_head": params["lm_head"]})
  xs = [jnp.ones((rows, m.shape[0]), m.dtype) for m in mats]
  product = jax.jit(lambda xs, ms: [x @ m for x, m in zip(xs, ms)])
  seconds = median_seconds(product, xs, mats, repeats=repeats)
  return sum(2 * rows * m.size for m in mats) / seconds / 1e9
