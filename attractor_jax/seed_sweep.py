"""Seed sweeps: one jitted, vmapped call runs S seeds; the seed axis is sharded over devices.

Each seed owns its memory init key and its sampling key. On one CPU this is a plain vmap;
on a GPU node or a TPU slice the same call spreads seeds over every device, and under JAX's
multi-process runtime (`distributed.initialize`) over every process's devices: each process
computes its shard and the results are gathered on every process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import pathlib
import re
import zipfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from attractor_jax import decoding, distributed, stats, writing
from attractor_jax.engine import Engine
from attractor_jax.errors import InputError
from attractor_jax.evals.metrics import distinct_n, rep_l, seq_rep_n
from attractor_jax.memories.base import Memory, abstract_state
from attractor_jax.model import Model
from attractor_jax.prompts import buffer_length, cache_length, prompt_ids
from attractor_jax.sampling import Trace, check_finite, check_sampling
from attractor_jax.scoring import Perplexity, perplexity
from attractor_jax.seeds import seed_list, stacked_keys
from attractor_jax.validation import check_int


@dataclasses.dataclass
class SeedRuns:
  """One prompt's generations, one per seed (NumPy; the seed axis first)."""

  seeds: list[int]
  prompt_tokens: list[int]
  tokens: list[list[int]]  # generated ids per seed, up to and including EOS
  states: Any  # final memory states [S, ...]; None without a memory
  trace: Trace  # [S, L, ...]: one row per generated token (rows past a seed's count are 0)
  memory: Memory | None

  def summaries(self) -> list[dict] | None:
    """Each seed's memory summary; None without a memory."""
    if self.memory is None:
      return None
    return [self.memory.summary(jax.tree.map(lambda a: a[i], self.states))
            for i in range(len(self.seeds))]

  def to_json(self) -> dict[str, Any]:
    return {"seeds": self.seeds, "prompt_tokens": self.prompt_tokens, "tokens": self.tokens,
            "memory": self.summaries()}


@dataclasses.dataclass
class Sweep:
  """A task run for every seed, with and without the memory (same seeds, same keys)."""

  task: str  # "generate" or "ppl"
  seeds: list[int]
  per_seed: list[dict] | None = None  # generate: metrics per seed, with the memory
  per_seed_off: list[dict] | None = None  # ... and without
  summary: dict | None = None  # generate: each metric over seeds
  paired_vs_off: dict | None = None  # generate: each metric, paired against no memory
  texts: list[str] | None = None  # generate: the texts with the memory
  memory: list[dict] | None = None  # generate: each seed's memory summary
  perplexity: Perplexity | None = None  # ppl

  def to_json(self) -> dict[str, Any]:
    if self.perplexity is not None:
      return {"task": self.task, "seeds": self.seeds, **self.perplexity.to_json()}
    return {"task": self.task, "seeds": self.seeds, "per_seed": self.per_seed,
            "per_seed_off": self.per_seed_off, "summary": self.summary,
            "paired_vs_off": self.paired_vs_off, "texts": self.texts, "memory": self.memory}


def shard_seeds(tree, devices=None):
  """Places arrays with a leading seed axis over all devices (padding is the caller's job)."""
  devices = jax.devices() if devices is None else devices
  mesh = Mesh(np.asarray(devices), ("seeds",))
  sharding = NamedSharding(mesh, PartitionSpec("seeds"))
  return jax.tree.map(lambda a: _put(a, sharding), tree)


def _put(a, sharding):
  """`a` placed by `sharding`, which may span other processes: from NumPy, which every process
  holds whole (typed keys through their key data)."""
  if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    data = jax.device_put(np.asarray(jax.random.key_data(a)), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
  return jax.device_put(np.asarray(a), sharding)


def _pad_to_devices(n: int, devices) -> int:
  return -(-n // len(devices)) * len(devices)


def check_batch_size(batch_size: int | None, n_seeds: int) -> int:
  """Seeds per vmapped call: `batch_size` (capped at the seed count), or all seeds when None."""
  if batch_size is None:
    return n_seeds
  check_int("batch_size", batch_size, 1)
  return min(int(batch_size), n_seeds)


def generate_seeds(model: Model, prompt, max_new_tokens: int, *, memory: Memory | None,
                   seeds: int | Sequence[int] = 8, temperature: float = 0.0, top_p: float = 1.0,
                   devices=None, batch_size: int | None = None, resume_dir=None,
                   progress: Callable[[int], object] | None = None) -> SeedRuns:
  """Generates for every seed, `batch_size` seeds per vmapped call (default: all in one call).

  Args:
    memory: a memory config or preset; None: no memory.
    seeds: a count n (seeds 0..n-1) or a list of seeds.
    devices: the devices the seed axis is sharded over (default: all).
    batch_size: seeds per call.
    resume_dir: each finished batch is written there atomically, and a rerun with the same
      model, prompt, settings and seeds loads it instead of generating it again.
    progress: called after each batch with its number of seeds.
  Returns:
    SeedRuns.
  """
  engine = model.engine(memory)
  check_sampling(max_new_tokens, temperature, top_p)
  seeds = seed_list(seeds)
  size = check_batch_size(batch_size, len(seeds))
  devices = jax.devices() if devices is None else devices
  ids = prompt_ids(model, prompt)
  settings = dict(model=model.spec, model_config=repr(model.config), dtype=str(model.dtype),
                  prompt=ids.tolist(), max_new_tokens=max_new_tokens, memory=repr(memory),
                  temperature=float(temperature), top_p=float(top_p))
  parts = []
  for i in range(0, len(seeds), size):
    batch = seeds[i:i + size]
    run = functools.partial(_run_rows, model, engine, [ids] * len(batch), batch,
                            max_new_tokens, temperature, top_p, devices,
                            _pad_to_devices(size, devices))
    parts.append(run() if resume_dir is None else
                 _stored(resume_dir, {**settings, "seeds": batch}, run, engine, model))
    if progress is not None:
      progress(len(batch))
  join = lambda *trees: jax.tree.map(lambda *a: np.concatenate(a), *trees)  # None joins to None
  tokens, count, states, trace = (join(*column) for column in zip(*parts))
  return SeedRuns(seeds=seeds, prompt_tokens=ids.tolist(),
                  tokens=[t[:c].tolist() for t, c in zip(tokens, count)], states=states,
                  trace=trace, memory=memory)


def _run_rows(model: Model, engine: Engine, prompts: list[np.ndarray], seeds, max_new_tokens,
              temperature, top_p, devices, width):
  """One decode loop over rows (a prompt and a seed each), padded to `width` rows (one shape
  for every batch); prompts of different lengths are left-aligned. Returns NumPy (tokens
  [B, L], counts [B], states or None, trace)."""
  pad = width - len(seeds)
  prompts = prompts + [prompts[-1]] * pad
  init_keys, sample_keys = stacked_keys(seeds + [seeds[-1]] * pad)
  lengths = {len(p) for p in prompts}
  width_T = max(lengths)
  sampler = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(model.eos_id))
  sizes = dict(cache_len=cache_length(model, width_T, max_new_tokens),
               buffer=buffer_length(max_new_tokens))
  if len(lengths) == 1:
    ids_BxT = np.stack(prompts)
    shared = bool((ids_BxT == ids_BxT[:1]).all())
    ids_BxT, init_keys, sample_keys = shard_seeds((jnp.asarray(ids_BxT), init_keys, sample_keys),
                                                  devices)
    rows = decoding.prefill(engine, model.params, ids_BxT, init_keys, sample_keys, *sampler,
                            shared_prompt=shared, **sizes)
  else:
    rows = shard_seeds(decoding.prefill_left_aligned(engine, model.params, prompts, init_keys,
                                                     sample_keys, *sampler, **sizes), devices)
    sample_keys = shard_seeds(sample_keys, devices)
  out = decoding.decode(engine, model.params, rows, sample_keys, jnp.int32(max_new_tokens),
                        *sampler, phases_from=width_T)
  gather = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)
                                if jax.process_count() > 1 else a)[: len(seeds)]
  states = None if out.memory_state is None else jax.tree.map(gather, out.memory_state)
  trace, count = jax.tree.map(gather, out.trace), gather(out.count)
  updates = None if states is None else jax.vmap(engine.memory.updates)(states)
  check_finite(trace.finite, count, [f"seed {s}" for s in seeds], engine.memory, updates)
  return gather(out.tokens), count, states, trace


def generate_prompts(model: Model, prompts: Sequence, max_new_tokens: int, *,
                     memory: Memory | None, seeds: int | Sequence[int] = 8,
                     temperature: float = 0.0, top_p: float = 1.0,
                     devices=None) -> list[SeedRuns]:
  """`generate_seeds` for several prompts at once: prompts x seeds rows in one vmapped call
  (one compilation, one decode loop).

  Args:
    prompts: texts or token-id lists (of any lengths: left-aligned, each row decodes as it
      would alone).
    memory, seeds, temperature, top_p, devices: as in `generate_seeds`.
  Returns:
    One SeedRuns per prompt, in order.
  """
  engine = model.engine(memory)
  check_sampling(max_new_tokens, temperature, top_p)
  seeds = seed_list(seeds)
  devices = jax.devices() if devices is None else devices
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
    raise InputError(f"prompts={prompts!r:.60}: pass a non-empty list of prompts")
  ids = [prompt_ids(model, p) for p in prompts]
  rows = len(ids) * len(seeds)
  tokens, count, states, trace = _run_rows(
      model, engine, [i for i in ids for _ in seeds], seeds * len(ids), max_new_tokens,
      temperature, top_p, devices, _pad_to_devices(rows, devices))
  out = []
  for p, prompt in enumerate(ids):
    part = slice(p * len(seeds), (p + 1) * len(seeds))
    pick = lambda tree: jax.tree.map(lambda a: a[part], tree)
    generated = [t[:c].tolist() for t, c in zip(tokens[part], count[part])]
    out.append(SeedRuns(seeds=seeds, prompt_tokens=prompt.tolist(), tokens=generated,
                        states=pick(states), trace=pick(trace), memory=memory))
  return out


_BATCH = re.compile(r"^(\.)?seeds-\d+-[0-9a-f]{16}\.npz")


def is_resume_dir(path: pathlib.Path) -> bool:
  """A directory holding only finished seed batches (and temporaries of their writes)."""
  return path.is_dir() and all(_BATCH.match(p.name) for p in path.iterdir())


def _stored(resume_dir, key: dict, run, engine: Engine, model: Model):
  """`run()`'s batch, loaded from `resume_dir` when a finished copy is there, else run and saved.

  Under several processes, process 0 alone reads and writes `resume_dir` and hands what it
  read to the others, so every process runs the same batches.
  """
  text = json.dumps(key, sort_keys=True)
  digest = hashlib.sha256(text.encode()).hexdigest()[:16]
  name = f"seeds-{key['seeds'][0]}-{digest}.npz"
  directory = lambda: writing.writable_dir(resume_dir, is_resume_dir, "finished seed batches")
  found = distributed.from_main(lambda: _finished(directory() / name, text))
  if found is not None:
    with np.load(io.BytesIO(found)) as z:
      return _from_arrays(z, engine, model)
  part = run()
  if distributed.is_main():
    writing.write_npz_atomic(directory() / name, {"key": np.asarray(text), **_to_arrays(part)})
  return part


def _finished(path: pathlib.Path, key: str) -> bytes | None:
  """The bytes of the batch at `path` when it is whole and made with `key`; else None."""
  try:
    data = path.read_bytes()
    with np.load(io.BytesIO(data)) as z:
      return data if str(z["key"]) == key else None
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # absent or unreadable: redo it
    return None


def _to_arrays(part) -> dict[str, np.ndarray]:
  tokens, count, states, trace = part
  leaves = lambda prefix, tree: {f"{prefix}.{i}": a for i, a in enumerate(jax.tree.leaves(tree))}
  return {"tokens": tokens, "count": count, **leaves("state", states), **leaves("trace", trace)}


def _from_arrays(z, engine: Engine, model: Model):
  def tree(prefix, like):
    leaves = {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(prefix + ".")}
    return jax.tree.unflatten(jax.tree.structure(like), [leaves[str(i)] for i in range(len(leaves))])

  states = None
  if engine.memory is not None:
    states = tree("state", abstract_state(engine.memory, model.config))
  return z["tokens"], z["count"], states, tree("trace", engine.trace_row_shape(model.params))


def generation_metrics(tokens: list[int]) -> dict[str, float]:
  """Repetition metrics of one continuation (docs/method.md, E3)."""
  return {"seq_rep_4": seq_rep_n(tokens, 4), "rep_128": rep_l(tokens, 128),
          "distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
          "length": float(len(tokens))}


def sweep(model: Model, task: str, *, memory: Memory | None, seeds: int | Sequence[int] = 8,
          prompt=None, max_new_tokens: int = 200, temperature: float = 0.0, top_p: float = 1.0,
          text: str | None = None, window: int = 512, max_tokens: int | None = None,
          batch_size: int | None = None, resume_dir=None,
          progress: Callable[[int], object] | None = None) -> Sweep:
  """Runs `task` for every seed, with the memory and without (same seeds, same keys).

  Args:
    task: "generate" (repetition metrics of each seed's continuation of `prompt`, paired
      against no memory) or "ppl" (`perplexity` of `text` with `window`, `max_tokens`).
    memory: a memory config or preset; None compares no memory with itself.
    batch_size, resume_dir, progress: those of `generate_seeds` (task generate; both runs
      keep their batches in `resume_dir`).
  Returns:
    Sweep (its `to_json()` is the CLI's output).
  """
  seeds = seed_list(seeds)
  if task == "ppl" and seeds != list(range(len(seeds))):
    raise InputError(f"seeds={seeds!r}: task 'ppl' runs seeds 0..n-1; pass a count")
  if task == "ppl":
    if text is None:
      raise InputError("task 'ppl' needs text (--text-file)")
    if batch_size is not None or resume_dir is not None:
      raise InputError("batch_size and resume_dir (--batch-size, --resume-dir) apply to task "
                       "'generate' only")
    out = perplexity(model, text, window, max_tokens, memory=memory, seeds=len(seeds))
    return Sweep(task=task, seeds=seeds, perplexity=out)
  if task != "generate":
    raise InputError(f"task={task!r} is unknown: use 'generate' or 'ppl'")
  if prompt is None:
    raise InputError("task 'generate' needs a prompt (--prompt)")
  runs = {name: generate_seeds(model, prompt, max_new_tokens, memory=m, seeds=seeds,
                               temperature=temperature, top_p=top_p, batch_size=batch_size,
                               resume_dir=resume_dir, progress=progress)
          for name, m in (("off", None), ("memory", memory))}
  per_seed = {name: [generation_metrics(t) for t in run.tokens] for name, run in runs.items()}
  metrics = list(per_seed["memory"][0])
  column = lambda name, m: np.array([row[m] for row in per_seed[name]])
  return Sweep(
      task=task, seeds=seeds, per_seed=per_seed["memory"], per_seed_off=per_seed["off"],
      summary={m: stats.summarize(column("memory", m)) for m in metrics},
      paired_vs_off={m: stats.paired(column("memory", m), column("off", m)) for m in metrics},
      texts=[model.tokenizer.decode(t) if model.tokenizer else "" for t in runs["memory"].tokens],
      memory=runs["memory"].summaries())
