"""Seed sweeps: one jitted, vmapped call runs S seeds; the seed axis is sharded over devices.

Each seed owns its attractor init key and its sampling key. On one CPU this is a plain vmap;
on a GPU node or a TPU slice the same call spreads seeds over every device, and under
`jax.distributed.initialize()` over every host (results gathered on every process).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import zipfile
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from attractor_jax import sampling, stats
from attractor_jax.errors import InputError
from attractor_jax.evals.metrics import distinct_n, rep_l, seq_rep_n
from attractor_jax.generation import (cache_length, check_sampling, prompt_ids, seed_keys,
                                      summarize_state)
from attractor_jax.memories.base import Memory, abstract_state
from attractor_jax.model import Model
from attractor_jax.presets import presets
from attractor_jax.results import write_npz_atomic


def seed_list(seeds: int | Sequence[int]) -> list[int]:
  """A seed count n (-> 0..n-1) or an explicit list of seeds, validated."""
  is_int = lambda s: isinstance(s, (int, np.integer)) and not isinstance(s, bool)
  if is_int(seeds):
    if seeds < 1:
      raise InputError(f"seeds={seeds!r}: pass an integer >= 1")
    return list(range(int(seeds)))
  if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds \
      or not all(is_int(s) and s >= 0 for s in seeds):
    raise InputError(f"seeds={seeds!r}: pass a count >= 1 or a non-empty list of integers >= 0")
  return [int(s) for s in seeds]


def shard_seeds(tree, devices=None):
  """Places arrays with a leading seed axis over all devices (padding is the caller's job)."""
  devices = jax.devices() if devices is None else devices
  mesh = Mesh(np.asarray(devices), ("seeds",))
  sharding = NamedSharding(mesh, PartitionSpec("seeds"))
  return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def _pad_to_devices(n: int, devices) -> int:
  return -(-n // len(devices)) * len(devices)


@functools.partial(jax.jit, static_argnames=("decoder", "cfg", "cache_len", "length", "eos_id"))
def _generate_seeds(params, prompt_SxT, init_keys_S, sample_keys_S, temperature, top_p, *,
                    decoder, cfg, cache_len, length, eos_id):
  """Rows of (prompt, seed keys): prompts of one length, vmapped prefill, one decode loop."""
  prefill = functools.partial(sampling.prefill, params, temperature=temperature, top_p=top_p,
                              state=None, decoder=decoder, cfg=cfg, cache_len=cache_len,
                              eos_id=eos_id)
  carry, row0 = jax.vmap(prefill)(prompt_SxT, init_keys_S, sample_keys_S)
  first_S = carry.token
  tokens, count, carry, rows = sampling.decode_seeds(params, carry, sample_keys_S, temperature,
                                                     top_p, decoder=decoder, cfg=cfg,
                                                     length=length, eos_id=eos_id)
  tokens = jnp.concatenate([first_S[:, None], tokens], axis=1)
  count = jnp.where(first_S == eos_id, 1, count + 1)
  trace = jax.tree.map(lambda r0, r: jnp.concatenate([r0[:, None], r], axis=1), row0, rows)
  return tokens, count, carry.state, trace


def check_batch_size(batch_size: int | None, n_seeds: int) -> int:
  """Seeds per vmapped call: `batch_size` (capped at the seed count), or all seeds when None."""
  if batch_size is None:
    return n_seeds
  if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
      or batch_size < 1:
    raise InputError(f"batch_size={batch_size!r}: pass an integer >= 1 (seeds per call)")
  return min(int(batch_size), n_seeds)


def generate_seeds(model: Model, prompt, max_new_tokens: int, *, attractor: Memory,
                   seeds: int | Sequence[int] = 8, temperature: float = 0.0, top_p: float = 1.0,
                   devices=None, batch_size: int | None = None, resume_dir=None,
                   progress: Callable[[int], object] | None = None) -> dict:
  """Generates for every seed, `batch_size` seeds per vmapped call (default: all in one call).

  With `resume_dir`, each finished batch is written there atomically, and a rerun with the
  same model spec, prompt, settings and seeds loads it instead of generating it again.
  `progress(n)` is called after each batch with its n seeds.
  Returns per-seed tokens, states (NumPy, seed axis first) and traces.
  """
  attractor.check_model(model.config)
  check_sampling(max_new_tokens, temperature, top_p)
  seeds = seed_list(seeds)
  size = check_batch_size(batch_size, len(seeds))
  devices = jax.devices() if devices is None else devices
  ids = prompt_ids(model, prompt)
  settings = dict(model=model.spec, model_config=repr(model.config), dtype=str(model.dtype),
                  prompt=ids.tolist(), max_new_tokens=max_new_tokens, attractor=repr(attractor),
                  temperature=float(temperature), top_p=float(top_p))
  parts = []
  for i in range(0, len(seeds), size):
    batch = seeds[i:i + size]
    run = functools.partial(_run_rows, model, np.repeat(ids[None], len(batch), 0), batch,
                            max_new_tokens, attractor, temperature, top_p, devices,
                            _pad_to_devices(size, devices))
    parts.append(run() if resume_dir is None else
                 _stored(resume_dir, {**settings, "seeds": batch}, run, attractor, model))
    if progress is not None:
      progress(len(batch))
  join = lambda *trees: jax.tree.map(lambda *a: np.concatenate(a), *trees)  # None joins to None
  tokens, count, states, trace = (join(*column) for column in zip(*parts))
  return {"seeds": seeds, "tokens": [t[:c].tolist() for t, c in zip(tokens, count)],
          "states": states, "trace": trace, "prompt_tokens": ids.tolist()}


def _run_rows(model: Model, ids_RxT, seeds, max_new_tokens, cfg, temperature, top_p, devices,
              width):
  """One vmapped call over rows (a prompt and a seed each), padded to `width` rows (one shape
  for every batch). Returns NumPy (tokens [R, max_new_tokens], counts [R], states or None,
  trace)."""
  pad = width - len(seeds)
  ids_RxT = np.concatenate([ids_RxT, np.repeat(ids_RxT[-1:], pad, 0)])
  init_keys, sample_keys = (jnp.stack(k) for k in zip(*(seed_keys(s)
                                                       for s in seeds + [seeds[-1]] * pad)))
  ids_RxT, init_keys, sample_keys = shard_seeds((jnp.asarray(ids_RxT), init_keys, sample_keys),
                                                devices)
  eos = model.eos_id
  tokens, count, states, trace = _generate_seeds(
      model.params, ids_RxT, init_keys, sample_keys, jnp.float32(temperature),
      jnp.float32(top_p), decoder=model.decoder, cfg=cfg,
      cache_len=cache_length(model, ids_RxT.shape[1], max_new_tokens),
      length=max_new_tokens - 1, eos_id=eos)
  gather = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)
                                if jax.process_count() > 1 else a)[: len(seeds)]
  states = None if states is None else jax.tree.map(lambda a: gather(a)[:, 0], states)
  return gather(tokens), gather(count), states, jax.tree.map(gather, trace)


def generate_prompts(model: Model, prompts: Sequence, max_new_tokens: int, *, attractor: Memory,
                     seeds: int | Sequence[int] = 8, temperature: float = 0.0,
                     top_p: float = 1.0, devices=None) -> list[dict]:
  """`generate_seeds` for several prompts at once: prompts x seeds rows in one vmapped call
  (one compilation, one decode loop). The prompts must have one token length (left-pad
  them: `generation.left_padded`). Returns one `generate_seeds` result per prompt.
  """
  attractor.check_model(model.config)
  check_sampling(max_new_tokens, temperature, top_p)
  seeds = seed_list(seeds)
  devices = jax.devices() if devices is None else devices
  if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
    raise InputError(f"prompts={prompts!r:.60}: pass a non-empty list of prompts")
  ids = [prompt_ids(model, p) for p in prompts]
  lengths = sorted({len(i) for i in ids})
  if len(lengths) > 1:
    raise InputError(f"the prompts have {lengths} tokens: pad them to one length")
  rows = len(ids) * len(seeds)
  tokens, count, states, trace = _run_rows(
      model, np.repeat(np.stack(ids), len(seeds), 0), seeds * len(ids), max_new_tokens,
      attractor, temperature, top_p, devices, _pad_to_devices(rows, devices))
  out = []
  for p, prompt in enumerate(ids):
    part = slice(p * len(seeds), (p + 1) * len(seeds))
    pick = lambda tree: jax.tree.map(lambda a: a[part], tree)
    generated = [t[:c].tolist() for t, c in zip(tokens[part], count[part])]
    out.append({"seeds": seeds, "tokens": generated, "states": pick(states), "trace": pick(trace),
                "prompt_tokens": prompt.tolist()})
  return out


def _stored(resume_dir, key: dict, run, cfg: Memory, model: Model):
  """`run()`'s batch, loaded from `resume_dir` when a finished copy is there, else run and saved."""
  text = json.dumps(key, sort_keys=True)
  digest = hashlib.sha256(text.encode()).hexdigest()[:16]
  path = pathlib.Path(resume_dir) / f"seeds-{key['seeds'][0]}-{digest}.npz"
  try:
    with np.load(path) as z:
      if str(z["key"]) == text:
        return _from_arrays(z, cfg, model)
  except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # absent or unreadable: redo it
    pass
  part = run()
  write_npz_atomic(path, {"key": np.asarray(text), **_to_arrays(part)})
  return part


def _to_arrays(part) -> dict[str, np.ndarray]:
  tokens, count, states, trace = part
  out = {"tokens": tokens, "count": count}
  if states is not None:
    out.update({f"state.{i}": leaf for i, leaf in enumerate(jax.tree.leaves(states))})
  out.update({f"trace.{f.name}": getattr(trace, f.name) for f in dataclasses.fields(trace)
              if getattr(trace, f.name) is not None})
  return out


def _from_arrays(z, cfg: Memory, model: Model):
  fields = lambda prefix: {k.split(".", 1)[1]: z[k] for k in z.files if k.startswith(prefix + ".")}
  leaves = fields("state")
  states = None
  if leaves:
    treedef = jax.tree.structure(abstract_state(cfg, model.config))
    states = jax.tree.unflatten(treedef, [leaves[str(i)] for i in range(len(leaves))])
  return z["tokens"], z["count"], states, sampling.Trace(**fields("trace"))


def generation_metrics(tokens: list[int]) -> dict[str, float]:
  """Repetition metrics of one continuation (METHOD.md E3)."""
  return {"seq_rep_4": seq_rep_n(tokens, 4), "rep_128": rep_l(tokens, 128),
          "distinct_1": distinct_n(tokens, 1), "distinct_2": distinct_n(tokens, 2),
          "length": float(len(tokens))}


def sweep(model: Model, task: str, *, attractor: Memory, seeds: int | Sequence[int] = 8,
          prompt=None, max_new_tokens: int = 200, temperature: float = 0.0, top_p: float = 1.0,
          text: str | None = None, window: int = 512, max_tokens: int | None = None,
          batch_size: int | None = None, resume_dir=None,
          progress: Callable[[int], object] | None = None) -> dict:
  """Runs `task` ("generate" or "ppl") for every seed; per-seed values, summaries, and paired
  differences against preset `off` (same seeds, same sampling keys).

  For "generate", `batch_size`, `resume_dir` and `progress` are those of `generate_seeds`
  (two runs: `off`'s, then the layer's; both keep their finished batches in `resume_dir`).
  """
  seeds = seed_list(seeds)
  if task == "ppl":
    from attractor_jax.scoring import perplexity
    if text is None:
      raise InputError("task 'ppl' needs text (--text-file)")
    if batch_size is not None or resume_dir is not None:
      raise InputError("batch_size and resume_dir (--batch-size, --resume-dir) apply to task "
                       "'generate' only")
    out = perplexity(model, text, window, max_tokens, attractor=attractor, seeds=len(seeds))
    return {"task": task, "seeds": seeds, **out}
  if task != "generate":
    raise InputError(f"task={task!r} is unknown: use 'generate' or 'ppl'")
  if prompt is None:
    raise InputError("task 'generate' needs a prompt (--prompt)")
  runs = {name: generate_seeds(model, prompt, max_new_tokens, attractor=cfg, seeds=seeds,
                               temperature=temperature, top_p=top_p, batch_size=batch_size,
                               resume_dir=resume_dir, progress=progress)
          for name, cfg in (("off", presets["off"]), ("layer", attractor))}
  per_seed = {name: [generation_metrics(t) for t in run["tokens"]] for name, run in runs.items()}
  metrics = list(per_seed["layer"][0])
  column = lambda name, m: np.array([row[m] for row in per_seed[name]])
  summary = {m: stats.summarize(column("layer", m)) for m in metrics}
  paired = {m: stats.paired(column("layer", m), column("off", m)) for m in metrics}
  states = runs["layer"]["states"]
  return {
      "task": task, "seeds": seeds, "per_seed": per_seed["layer"], "per_seed_off": per_seed["off"],
      "summary": summary, "paired_vs_off": paired,
      "texts": [model.tokenizer.decode(t) if model.tokenizer else "" for t in runs["layer"]["tokens"]],
      "attractor": [summarize_state(jax.tree.map(lambda a: a[i], states), attractor)
                    for i in range(len(seeds))] if states is not None else None,
  }
