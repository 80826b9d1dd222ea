"""What each decode change bought, kernel by kernel, timed in one process (issue 7).

    python -m experiments.decode_kernels  ->  results/decode_kernels.json

Each row times the kernel as the decoder runs it now against the form it replaced, on the
default model's shapes (batch 1, one token), median of 30 calls after warm-up:
  - top-p sampling: a sort of the 49,152 logits (the old sampler, which also ran for greedy
    decoding) vs `sampling.sample_token` (greedy skips it; top-p by bisection);
  - the logits: the tied [V, D] table contracted on its second axis vs `load`'s [D, V] copy.
The KV cache layout change (see `transformer.KVCache`) shows in the decoder as a whole: the
context-length curve of `experiments.growth`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import attractor_jax as aj
from attractor_jax import sampling
from attractor_jax.results import git_commit, machine_info, write_json_atomic


def _ms(fn, *args, repeats: int = 30) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def sorted_top_p(logits_V, key, temperature, top_p):
  """The sampler this library used before: sort, cumulative sum, categorical in sorted order."""
  scaled = logits_V / jnp.maximum(temperature, 1e-6)
  order = jnp.argsort(-scaled)
  probs = jax.nn.softmax(scaled[order])
  outside = (top_p < 1.0) & (jnp.cumsum(probs) - probs >= top_p)
  sampled = order[jax.random.categorical(key, jnp.where(outside, -jnp.inf, scaled[order]))]
  return jnp.where(temperature == 0.0, jnp.argmax(logits_V), sampled)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/decode_kernels.json")
  args = parser.parse_args(argv)
  model = aj.load()
  cfg = model.config
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.standard_normal(cfg.vocab_size) * 3, jnp.float32)
  key = jax.random.key(0)
  rows = {}
  for temperature, top_p in ((0.0, 1.0), (0.8, 0.95)):
    name = "greedy" if temperature == 0 else f"top-p {top_p}, temperature {temperature}"
    rows[f"sampling, {name}"] = {
        "before_ms": _ms(jax.jit(sorted_top_p), logits, key, temperature, top_p),
        "after_ms": _ms(jax.jit(sampling.sample_token), logits, key, temperature, top_p)}
  hidden = jnp.asarray(rng.standard_normal((1, 1, cfg.width)), jnp.float32)
  rows["logits from the final hidden state"] = {
      "before_ms": _ms(jax.jit(lambda h, e: jnp.einsum("btd,vd->btv", h, e)), hidden,
                       model.params["embed"]["embedding"]),
      "after_ms": _ms(jax.jit(lambda h, w: h @ w), hidden, model.params["lm_head"]["kernel"])}
  for row in rows.values():
    row["saved_ms"] = row["before_ms"] - row["after_ms"]
  write_json_atomic(args.out, {
      "experiment": "decode-kernels", "model": model.spec, "rows": rows, "repeats": 30,
      "git_commit": git_commit(), "machine": machine_info()})
  for name, row in rows.items():
    print(f"{name}: {row['before_ms']:.2f} -> {row['after_ms']:.2f} ms")


if __name__ == "__main__":
  main()
