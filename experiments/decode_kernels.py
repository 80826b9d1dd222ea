"""What each decode change bought, kernel by kernel, timed in one process (issue 7).

    python -m experiments.decode_kernels  ->  results/decode_kernels.json

Each row times the kernel as the decoder runs it now against the form it replaced, on the
default model's shapes (batch 1, one token), median of 30 calls after warm-up (10 for the
64-row sampling, 3 for the seed loop):
  - top-p sampling: a sort of the 49,152 logits (the old sampler, which also ran for greedy
    decoding) vs `sampling.sample_token` (greedy skips it; top-p by bisection);
  - top-p sampling of 64 rows (8 prompts x 8 seeds): a vmap of the bisection and a Gumbel
    per token (`jax.random.categorical`) vs `sampling.sample_tokens` (row by row, inverse CDF);
  - the logits: the tied [V, D] table contracted on its second axis vs `load`'s [D, V] copy;
  - the 30 layers' projections: q, k, v, gate, up as five matrices vs the fused "qkv" and
    "gate_up" kernels `load` builds (o and down in both);
  - a decode loop that reads and writes 30 layers' caches of 1,024 slots: the write
    independent of the read (XLA copies every cache every step) vs `transformer.ordered_after`;
  - 64 decode steps of 8 seeds, 512 cache slots: a `jax.vmap` of one-row decode loops vs
    `decoding.decode` over all rows (ms per step);
  - the prefill of 16 and 64 seeds sharing the bench prompt (seed preset, 256 slots): each
    row's two passes (a baseline pass for its fresh state, then its prompt pass) vs
    `decoding.prefill` with `shared_prompt` (one pass, then each row's memory and token 0);
  - greedy sampling of 64 rows, row by row as `sampling.sample_tokens` runs it: `jnp.argmax`
    vs `sampling.first_max`;
  - 120 decode steps of 16 and 64 seeds after the bench prompt, 256 slots (ms per step): one
    loop reading every slot vs phases reading the first 128, then 256 (`read_bounds`);
  - top-p sampling of the model's own logits, 64 rows (a sampled continuation of the bench
    prompt): the bisection over the whole vocabulary in every row vs `sampling.nucleus`'s
    bisection over the 256 most probable tokens where they hold top_p (issue 32).

`breakdown` splits one decode step (seed preset, top-p 0.95 at temperature 0.8, 256 slots,
the cache holding the prompt and 64 tokens) at 1, 16 and 64 rows into parts, each jitted and
timed alone at the step's shapes: the products (every layer's matrices and the output's),
attention over the cache (30 layers), sampling, the memory's read and update; "rest" is the
step minus their sum (norms, RoPE, the cache writes, the loop's bookkeeping). The step itself
is the decode loop's time per token.
The KV cache layout change (see `transformer.KVCache`) shows in the decoder as a whole: the
context-length curve of `experiments.growth`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import attractor_jax as aj
from attractor_jax import decoding, layers, roofline, sampling
from attractor_jax.bench import PROMPT
from attractor_jax.prompts import prompt_ids
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic
from attractor_jax.transformer import init_cache, ordered_after


def _ms(fn, *args, repeats: int = 30) -> float:
  return 1e3 * roofline.median_seconds(fn, *args, repeats=repeats)


def sorted_top_p(logits_V, key, temperature, top_p):
  """The sampler this library used before: sort, cumulative sum, categorical in sorted order."""
  scaled = logits_V / jnp.maximum(temperature, 1e-6)
  order = jnp.argsort(-scaled)
  probs = jax.nn.softmax(scaled[order])
  outside = (top_p < 1.0) & (jnp.cumsum(probs) - probs >= top_p)
  sampled = order[jax.random.categorical(key, jnp.where(outside, -jnp.inf, scaled[order]))]
  return jnp.where(temperature == 0.0, jnp.argmax(logits_V), sampled)


def gumbel_top_p(logits_V, key, temperature, top_p):
  """The top-p draw this library used before `sampling.draw`: a Gumbel per token
  (`jax.random.categorical`) over the nucleus."""
  scaled = logits_V / jnp.maximum(temperature, 1e-6)
  kept = sampling.nucleus(jax.nn.softmax(scaled), top_p)
  return jax.random.categorical(key, jnp.where(kept, scaled, -jnp.inf))


def _model_logits(model, rows: int = 64) -> jax.Array:
  """The model's logits after the bench prompt and each of `rows` tokens of its sampled
  continuation [rows, V]."""
  ids = prompt_ids(model, PROMPT)
  g = aj.generate(model, PROMPT, rows, memory=None, temperature=0.8, top_p=0.95)
  seq = np.concatenate([ids, np.asarray(g.tokens)])[:len(ids) + rows - 1]
  return jnp.asarray(np.asarray(model.logits([seq.tolist()]))[0, -rows:])


def _model_sampling(model, rows: int = 64) -> dict:
  logits_RxV = _model_logits(model, rows)
  keys = jax.random.split(jax.random.key(2), rows)
  sample = lambda: _ms(jax.jit(sampling.sample_tokens), logits_RxV, keys, 0.8, 0.95, repeats=10)
  with whole_vocab_nucleus():
    before = sample()
  return {"before_ms": before, "after_ms": sample()}


def breakdown(model, rows: int, slots: int = 256, steps: int = 64) -> dict:
  """ms per decode step and per part of it (see the module's docstring)."""
  cfg, params = model.config, model.params
  engine = model.engine(aj.presets["seed"])
  ids = jnp.asarray(prompt_ids(model, PROMPT))
  keys = jax.random.split(jax.random.key(0), rows)
  prompts = jnp.repeat(ids[None], rows, 0)
  sampler = dict(temperature=0.8, top_p=0.95, eos_id=-1)
  rows_state = decoding.prefill(engine, params, prompts, keys, keys, cache_len=slots,
                                buffer=2 * steps + 1, shared_prompt=True, **sampler)
  rows_state = decoding.decode(engine, params, rows_state, keys, steps, **sampler,
                               phases_from=ids.shape[0])  # the cache holds prompt + 64 tokens
  start = int(rows_state.slot[0])
  loop = lambda params, r, k: decoding.decode(engine, params, r, k, 2 * steps, **sampler,
                                              phases_from=start)
  copy = lambda: jax.tree.map(jnp.copy, rows_state)  # decode donates its rows
  loop(params, copy(), keys)
  step_ms = 1e3 * np.median([_timed(loop, params, copy(), keys) for _ in range(3)]) / steps

  mats = [m for lp in params["layers"] for m in roofline.kernels(lp)] + [
      params["lm_head"]["kernel"]]
  xs = [jnp.ones((rows, m.shape[0]), m.dtype) for m in mats]
  products = jax.jit(lambda xs, ms: [x @ m for x, m in zip(xs, ms)])
  B, K, X, H = rows, cfg.num_kv_heads, cfg.head_dim, cfg.num_heads
  bound = next(b for b in decoding.read_bounds(slots, above=ids.shape[0]) if b > start)
  cache_k = [jnp.ones((B, K, bound, X)) for _ in range(cfg.num_layers)]
  q, k1 = jnp.ones((B, 1, H, X)), jnp.ones((B, K, 1, X))
  pos = jnp.full((B, 1), start, jnp.int32)
  slot_pos = jnp.broadcast_to(jnp.arange(bound)[None], (B, bound))
  attention = jax.jit(lambda caches: [layers.attend(q, k1, k1, pos, cfg, (c, c, slot_pos))
                                      for c in caches])
  logits_BxV = jnp.tile(_model_logits(model, 8), (max(rows // 8, 1), 1))[:rows]
  samples = jax.jit(sampling.sample_tokens)
  passed = engine.run_pass(params, rows_state.token[:, None], rows_state.position[:, None],
                           rows_state.cache, engine.feedback(rows_state.memory_state),
                           slot=rows_state.slot[0], last_logits_only=True)
  remember = jax.jit(lambda p, passed, state: engine.remember(
      p, rows_state.token[:, None], rows_state.position[:, None], passed, state,
      engine.feedback(state), last_logits_only=True).memory_state)
  parts = {"products": _ms(products, xs, mats, repeats=10),
           "attention": _ms(attention, cache_k, repeats=10),
           "sampling": _ms(samples, logits_BxV, keys, 0.8, 0.95, repeats=10),
           "memory": _ms(remember, params, passed, rows_state.memory_state, repeats=10)}
  parts["rest"] = step_ms - sum(parts.values())
  flops = rows * roofline.flops_per_token(params)
  return {"rows": rows, "slots_read": bound, "step_ms": step_ms, "parts_ms": parts,
          "products_gflops": flops / parts["products"] / 1e6}


def _timed(fn, *args) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


@contextlib.contextmanager
def whole_vocab_nucleus():
  """Decoding as before issue 32: every row's top-p bisection over the whole vocabulary
  (programs traced inside see it; compiled ones are dropped on entry and exit)."""
  fast = sampling.nucleus

  def every_token(probs_V, top_p):
    bits_V = jax.lax.bitcast_convert_type(probs_V, jnp.int32)
    return (bits_V >= sampling.smallest_kept(probs_V, top_p)) | (top_p >= 1.0)

  sampling.nucleus = every_token
  jax.clear_caches()
  try:
    yield
  finally:
    sampling.nucleus = fast
    jax.clear_caches()


def _batched_sampling(logits_V, rows: int = 64) -> dict:
  """Top-p over `rows` rows (E3's fact-recall batch): vmap of the Gumbel draw vs
  `sampling.sample_tokens` (row by row, inverse CDF)."""
  logits_RxV = logits_V + jax.random.normal(jax.random.key(1), (rows, logits_V.shape[0]))
  keys = jax.random.split(jax.random.key(2), rows)
  before = jax.jit(jax.vmap(gumbel_top_p, in_axes=(0, 0, None, None)))
  return {"before_ms": _ms(before, logits_RxV, keys, 0.8, 0.95, repeats=10),
          "after_ms": _ms(jax.jit(sampling.sample_tokens), logits_RxV, keys, 0.8, 0.95,
                          repeats=10)}


def _projections(model, x_1xD) -> dict:
  layers, cfg = model.params["layers"], model.config
  HX, KX, F = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.mlp_width
  cuts = lambda w, ends: [jnp.asarray(np.ascontiguousarray(part))
                          for part in np.split(np.asarray(w), ends, axis=1)]
  split = [(*cuts(lp["attn"]["qkv"]["kernel"], [HX, HX + KX]),
            *cuts(lp["mlp"]["gate_up"]["kernel"], [F])) for lp in layers]
  fused = [(lp["attn"]["qkv"]["kernel"], lp["mlp"]["gate_up"]["kernel"]) for lp in layers]
  each = lambda x, ws: sum(jnp.sum(x @ w) for layer in ws for w in layer)
  return {"before_ms": _ms(jax.jit(each), x_1xD, split),
          "after_ms": _ms(jax.jit(each), x_1xD, fused)}


def _cache_loop(cfg, slots: int = 1024, steps: int = 32) -> dict:
  """ms per step of a loop whose body reads each cache (a score per slot) and writes a slot."""
  shape = (1, cfg.num_kv_heads, slots, cfg.head_dim)
  caches = tuple(jnp.zeros(shape) for _ in range(2 * cfg.num_layers))
  query = jnp.ones((cfg.head_dim,))

  def loop(caches, tie):
    def body(i, carry):
      caches, total = carry
      out = []
      for c in caches:
        read = jnp.einsum("bksx,x->bks", c, query)
        total += jnp.sum(read)
        new = jnp.full((1, cfg.num_kv_heads, 1, cfg.head_dim), 0.5)
        out.append(jax.lax.dynamic_update_slice(c, ordered_after(read, new) if tie else new,
                                                (0, 0, i, 0)))
      return tuple(out), total
    return jax.lax.fori_loop(0, steps, body, (caches, jnp.float32(0)))

  return {"before_ms": _ms(jax.jit(lambda c: loop(c, False)), caches) / steps,
          "after_ms": _ms(jax.jit(lambda c: loop(c, True)), caches) / steps}


def _seed_loop(model, seeds: int = 8, slots: int = 512, steps: int = 64) -> dict:
  engine = model.engine(None)
  ids = jnp.asarray(prompt_ids(model, PROMPT))
  keys = jax.random.split(jax.random.key(0), seeds)
  rows = decoding.prefill(engine, model.params, jnp.repeat(ids[None], seeds, 0), keys, keys, 0.0,
                          1.0, -1, cache_len=slots, buffer=steps + 1)
  loop = dict(num_tokens=steps + 1, temperature=0.0, top_p=1.0, eos_id=-1)  # no row stops early
  one_row = lambda params, row, key: decoding.decode(
      engine, params, jax.tree.map(lambda a: a[None], row), key[None], **loop)
  vmapped = jax.vmap(one_row, in_axes=(None, 0, 0))
  together = lambda params, rows, keys: decoding.decode(engine, params, rows, keys, **loop)
  args = (model.params, rows, keys)
  return {"before_ms": _ms(jax.jit(vmapped), *args, repeats=3) / steps,
          "after_ms": _ms(jax.jit(together), *args, repeats=3) / steps}


def prefill_rows_before(engine, params, prompts_BxT, init_keys_B, slots: int):
  """The seeds' prefill as it was: per row a baseline pass for the fresh state, then the
  prompt's pass with it (vmapped over rows)."""
  positions = jnp.arange(prompts_BxT.shape[1])[None]

  def row(prompt_T, key):
    state = engine.fresh_states(params, key[None], prompt_T[None])
    cache = init_cache(engine.config, 1, slots)
    out = engine.step(params, prompt_T[None], positions, cache, state, last_logits_only=True)
    return out.logits, out.cache, out.memory_state

  return jax.vmap(row)(prompts_BxT, init_keys_B)


def _shared_prefill(model, seeds: int, slots: int = 256) -> dict:
  engine = model.engine(aj.presets["seed"])
  ids = jnp.asarray(prompt_ids(model, PROMPT))
  prompts, keys = jnp.repeat(ids[None], seeds, 0), jax.random.split(jax.random.key(0), seeds)
  before = jax.jit(functools.partial(prefill_rows_before, engine, slots=slots))
  after = lambda params, prompts, keys: decoding.prefill(
      engine, params, prompts, keys, keys, 0.0, 1.0, -1, cache_len=slots, buffer=1,
      shared_prompt=True)
  return {"before_ms": _ms(before, model.params, prompts, keys, repeats=5),
          "after_ms": _ms(after, model.params, prompts, keys, repeats=5)}


def _phases(model, seeds: int, slots: int = 256, steps: int = 120) -> dict:
  engine = model.engine(aj.presets["seed"])
  ids = jnp.asarray(prompt_ids(model, PROMPT))
  keys = jax.random.split(jax.random.key(0), seeds)
  prompts = jnp.repeat(ids[None], seeds, 0)
  rows = decoding.prefill(engine, model.params, prompts, keys, keys, 0.0, 1.0, -1,
                          cache_len=slots, buffer=steps + 1, shared_prompt=True)
  loop = dict(num_tokens=steps + 1, temperature=0.0, top_p=1.0, eos_id=-1)
  run = lambda phased: jax.jit(lambda params, rows, keys: decoding.decode(
      engine, params, rows, keys, **loop, phases_from=ids.shape[0] if phased else None))
  args = (model.params, rows, keys)
  return {"before_ms": _ms(run(False), *args, repeats=3) / steps,
          "after_ms": _ms(run(True), *args, repeats=3) / steps}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="results/decode_kernels.json")
  parser.add_argument("--new-only", action="store_true",
                      help="measure only the rows of the last change and the breakdown, into "
                           "the existing file (each stamped with its own commit)")
  args = parser.parse_args(argv)
  model = aj.load()
  if args.new_only:
    result = json.loads(pathlib.Path(args.out).read_text())
    result["rows"].update(_new_rows(model))
  else:
    result = {"experiment": "decode-kernels", "model": model.spec, "rows": _all_rows(model),
              "repeats": {"default": 30, "64-row sampling": 10, "8-seed decode": 3,
                          "prefill": 5, "decode phases": 3},
              "git_commit": git_commit(), "machine": machine_info(), "sources": sources()}
  result["breakdown"] = _breakdown_before_after(model)
  write_json_atomic(args.out, result)
  for name, row in result["rows"].items():
    print(f"{name}: {row['before_ms']:.2f} -> {row['after_ms']:.2f} ms")
  for when, by_rows in result["breakdown"].items():
    for part in by_rows if isinstance(by_rows, list) else []:
      print(when, part)


def _new_rows(model) -> dict:
  """The rows of the last change (issue 32), each with the commit and machine it ran on."""
  row = _model_sampling(model)
  row["saved_ms"] = row["before_ms"] - row["after_ms"]
  row.update(git_commit=git_commit(), machine=machine_info(), sources=sources())
  return {"sampling the model's logits, top-p 0.95, temperature 0.8, 64 rows": row}


def _breakdown_before_after(model) -> dict:
  parts = {"after": [breakdown(model, n) for n in (1, 16, 64)]}
  with whole_vocab_nucleus():
    parts["before"] = [breakdown(model, n) for n in (1, 16, 64)]
  return {**parts, "git_commit": git_commit(), "machine": machine_info(), "sources": sources()}


def _all_rows(model) -> dict:
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
  rows["sampling, top-p 0.95, temperature 0.8, 64 rows"] = _batched_sampling(logits)
  hidden = jnp.asarray(rng.standard_normal((1, 1, cfg.width)), jnp.float32)
  rows["logits from the final hidden state"] = {
      "before_ms": _ms(jax.jit(lambda h, e: jnp.einsum("btd,vd->btv", h, e)), hidden,
                       model.params["embed"]["embedding"]),
      "after_ms": _ms(jax.jit(lambda h, w: h @ w), hidden, model.params["lm_head"]["kernel"])}
  rows["q, k, v, gate, up projections of 30 layers"] = _projections(model, hidden[0])
  rows["decode loop over 30 layers' caches (1,024 slots), per step"] = _cache_loop(cfg)
  rows["8-seed decode, 512 slots, per step"] = _seed_loop(model)
  for seeds in (16, 64):
    rows[f"prefill of {seeds} seeds sharing a prompt"] = _shared_prefill(model, seeds)
  logits_64xV = logits + jax.random.normal(jax.random.key(3), (64, cfg.vocab_size))
  rows["greedy sampling, 64 rows"] = {
      "before_ms": _ms(jax.jit(lambda x: jax.lax.map(jnp.argmax, x)), logits_64xV),
      "after_ms": _ms(jax.jit(lambda x: jax.lax.map(sampling.first_max, x)), logits_64xV)}
  for seeds in (16, 64):
    rows[f"{seeds}-seed decode, 256 slots, reading written slots only, per step"] = _phases(
        model, seeds)
  rows.update(_new_rows(model))
  for row in rows.values():
    row.setdefault("saved_ms", row["before_ms"] - row["after_ms"])
  return rows


if __name__ == "__main__":
  main()
