"""Orbax checkpoints of memory state (and of whole runs, to resume), with metadata.

A checkpoint directory holds two items: `state` (the pytree, restored against an abstract
target built from the metadata, so the pytree type comes back) and `meta` (JSON: the format,
library version, memory config, model id and config, and the caller's own metadata under
"user"). A save replaces only a checkpoint of this library, atomically and never losing the
previous one on a kill, a full disk or a second writer (`writing.replace_dir_atomic`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from attractor_jax import decoding, orbax_quiet, writing
from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.memories.base import KINDS, Memory, abstract_state
from attractor_jax.sampling import SamplingState

FORMAT = "attractor-jax/5"  # the format this version writes and reads, states and runs alike
LAST_READER = {  # an older format, and the last commit whose code reads it
    "attractor-jax/2": "75be428", "attractor-jax/3": "75be428", "attractor-jax/4": "75be428"}


@dataclasses.dataclass
class Restored:
  """A restored checkpoint: the pytree, the memory config it was made with, all metadata,
  and the caller's own metadata as it was saved."""

  state: Any
  memory: Memory | None  # None: a run without a memory
  meta: dict
  user: dict


def memory_from_dict(d: dict | None) -> Memory | None:
  """The memory config that `Memory.to_dict` wrote (None: no memory). A kind defined outside
  the library is known once its module is imported."""
  import attractor_jax.presets  # noqa: F401 (defines, so registers, the library's memories)

  if d is None:
    return None
  d = dict(d)
  kind = d.pop("kind")
  if kind not in KINDS:
    raise ValueError(f"unknown memory kind {kind!r} (import the module that defines it)")
  return KINDS[kind](**d)


def _metadata(memory: Memory | None, model, user: dict, **extra) -> dict:
  """What restore needs (format, memory, model) plus the caller's metadata under "user"."""
  from attractor_jax import __version__

  try:
    json.dumps(user, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise InputError(f"the checkpoint metadata must be JSON data ({e}): pass strings, numbers, "
                     "lists and dicts") from None
  return {"format": FORMAT, "library_version": __version__, "memory_config": None if memory is None else memory.to_dict(),
          "model": model.spec, "width": model.config.width,
          "model_config": dataclasses.asdict(model.config), **extra, "user": user}


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def is_our_checkpoint(path: pathlib.Path) -> bool:
  """A directory holding this library's checkpoint metadata (any format version)."""
  try:
    meta = json.loads((path / "meta" / "metadata").read_text())
  except (OSError, ValueError):
    return False
  return isinstance(meta, dict) and str(meta.get("format", "")).startswith("attractor-jax/")


def _save_replacing(path: pathlib.Path, tree, meta: dict, overwrite: bool = True):
  """Saves beside `path`, then puts it in `path`'s place (see `writing.replace_dir_atomic`)."""
  if not overwrite and pathlib.Path(path).exists():
    raise InputError(f"checkpoint {str(path)!r} exists: pass overwrite=True or another path")

  def save(fresh):
    with orbax_quiet.failures_left_to_the_caller():
      _checkpointer().save(fresh, args=ocp.args.Composite(
          state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))

  writing.replace_dir_atomic(path, save, ours=is_our_checkpoint, what="checkpoint")


def save_state(path: str | pathlib.Path, state, *, memory: Memory, model,
               overwrite: bool = True, **user_meta):
  """Saves a memory state with what restoring it needs.

  Args:
    path: the checkpoint directory (replaced atomically when it exists and `overwrite`).
    state: a memory state, optionally batched over seeds (leading axes).
    memory: the memory config that made it.
    model: the Model it ran in (its spec and config are saved).
    **user_meta: any JSON data; `restore_state(...).user` gives it back unchanged.
  """
  if state is None:
    raise InputError("there is no memory state to save: the preset is 'off'")
  if not isinstance(memory, Memory):
    raise InputError(f"memory={memory!r:.60}: pass the memory config the state was made with")
  _check_no_typed_keys(state)
  _check_finite(state, f"memory {memory.kind!r}")
  one = jax.tree.leaves(abstract_state(memory, model.config))[0]
  leaf = jax.tree.leaves(state)[0]
  batch = tuple(np.shape(leaf))[:np.ndim(leaf) - len(one.shape)]
  _save_replacing(path, state, _metadata(memory, model, user_meta, batch_shape=list(batch)),
                  overwrite)


def read_meta(path: str | pathlib.Path) -> dict:
  """The metadata of a checkpoint, in this version's keys; InputError when the directory is
  missing, damaged or of an unknown format."""
  path = pathlib.Path(path).absolute()
  meta_file = path / "meta" / "metadata"
  if not path.is_dir():
    raise InputError(f"checkpoint {str(path)!r} does not exist: pass a directory made by save_state")
  try:
    meta = json.loads(meta_file.read_text())
  except (OSError, ValueError) as e:
    raise InputError(f"checkpoint {str(path)!r} is incomplete or corrupted ({type(e).__name__}): "
                     "restore an earlier checkpoint") from None
  check_format(meta, str(path))
  needed = ("model", "width", "model_config") + (() if meta.get("kind") == "run" else
                                                 ("memory_config",))
  missing = [k for k in needed if meta.get(k) is None]
  if missing:
    raise InputError(f"checkpoint {str(path)!r} metadata lacks {', '.join(missing)}: "
                     "it is corrupted; restore an earlier checkpoint")
  try:
    memory_from_dict(meta["memory_config"])
    ModelConfig(**meta["model_config"])
  except (TypeError, KeyError, ValueError) as e:
    raise InputError(f"checkpoint {str(path)!r} has an unreadable memory or model config ({e})") from None
  return meta


def check_format(meta, where: str):
  """Refuses metadata of a format this version does not read, naming the last commit that
  reads an older one."""
  found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
  if found in LAST_READER:
    raise InputError(f"checkpoint {where!r} has format {found!r}, which this version no longer "
                     f"reads: restore it with attractor-jax at commit {LAST_READER[found]} and "
                     "save it again")
  if found != FORMAT:
    raise InputError(f"checkpoint {where!r} has format {found!r}, not {FORMAT!r}: save it "
                     "again with this version")


def _check_made_with(meta: dict, memory: Memory | None, model_spec: str | None, where: str):
  """Refuses a checkpoint made with another memory config or model than the caller's."""
  saved = memory_from_dict(meta["memory_config"])
  if memory != saved and (memory is not None or meta.get("kind") == "run"):
    raise InputError(f"checkpoint {where!r} was made with a different memory config "
                     f"({_diff(saved, memory)}): use the same preset or config")
  if model_spec is not None and model_spec != meta["model"]:
    raise InputError(f"checkpoint {where!r} was made with model {meta['model']!r}, "
                     f"not {model_spec!r}: restore it into the same model")
  return saved


def restore_state(path: str | pathlib.Path, *, memory: Memory | None = None,
                  model=None) -> Restored:
  """Restores a memory state saved by `save_state`.

  Args:
    memory: when given, refuse a checkpoint made with another memory config.
    model: a Model or model spec; when given, refuse a checkpoint of another model.
  Returns:
    Restored(state, memory, meta, user): `user` is the caller's metadata as saved.
  """
  path = pathlib.Path(path).absolute()
  meta = read_meta(path)
  if meta.get("kind") == "run":
    raise InputError(f"checkpoint {str(path)!r} holds a run, not a state: use "
                     "checkpoint.restore_run")
  spec = getattr(model, "spec", model)
  saved = _check_made_with(meta, memory, spec, str(path))
  target = abstract_state(saved, ModelConfig(**meta["model_config"]),
                          tuple(meta.get("batch_shape", [])))
  state = _restore(path, target, meta)
  name = _nonfinite_leaf(state)
  if name is not None:
    raise InputError(f"checkpoint {str(path)!r}: state.{name} has NaN or Inf values")
  return Restored(state=state, memory=saved, meta=meta, user=meta["user"])


def _restore(path: pathlib.Path, target, meta: dict):
  """Restores the `state` item against an abstract target; InputError when it is damaged."""
  restore = lambda tree: _checkpointer().restore(path, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(tree)))["state"]
  try:
    return restore(target)
  except Exception as e:  # orbax raises many types on damaged directories
    raise InputError(f"checkpoint {str(path)!r} is incomplete or corrupted "
                     f"({type(e).__name__}): restore an earlier checkpoint") from None


def _diff(a: Memory | None, b: Memory | None) -> str:
  if a is None or b is None:
    return f"saved {a!r:.60} vs given {b!r:.60}"
  da, db = a.to_dict(), b.to_dict()
  keys = [k for k in {**da, **db} if da.get(k) != db.get(k)]
  return ", ".join(f"{k}: saved {da.get(k)!r} vs given {db.get(k)!r}" for k in keys[:3])


def _nonfinite_leaf(tree) -> str | None:
  """The name of the first floating-point leaf holding NaN or Inf, or None."""
  for leaf_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all():
      return jax.tree_util.keystr(leaf_path).lstrip(".")
  return None


def _check_finite(tree, what: str):
  """Refuses to save a state holding NaN or Inf: it could only be restored to fail."""
  name = _nonfinite_leaf(tree)
  if name is not None:
    raise InputError(f"the state of {what} has NaN or Inf values in {name}: it is not saved; "
                     "save an earlier good state")


def _check_no_typed_keys(tree):
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
      raise InputError("a typed PRNG key cannot be checkpointed: store jax.random.key_data(key)")


def _resumable(rows: SamplingState) -> dict:
  """The part of a one-row SamplingState that a run resumes from (the cache and memory state
  keep their row axis; a run's slot is its position)."""
  return {"token": rows.token[0], "position": rows.position[0], "t": rows.t[0],
          "done": rows.done[0], "cache": rows.cache, "state": rows.memory_state}


def run_tree(generation, model) -> tuple[dict, dict]:
  """The (pytree, metadata) of a run: KV cache, memory state, last token, position, keys.

  The cache is saved, not rebuilt: it depends on the feedback each pass received.
  """
  tree = {"carry": _resumable(generation.run), "sample_key": jnp.asarray(generation.sample_key),
          "tokens": jnp.asarray(generation.prompt_tokens + generation.tokens, jnp.int32)}
  _check_no_typed_keys(tree)
  _check_finite(tree["carry"]["state"], "this run's memory")
  meta = _metadata(generation.memory, model, {}, kind="run",
                   cache_len=int(generation.run.cache.max_len),
                   num_tokens=int(tree["tokens"].shape[0]),
                   prompt_len=len(generation.prompt_tokens),
                   position=int(generation.run.position[0]),
                   sample_key_data=np.asarray(generation.sample_key).tolist())
  return tree, meta


def run_target(meta: dict, memory: Memory | None, model, where: str) -> dict:
  """The abstract pytree a saved run restores into, after checking memory and model."""
  check_format(meta, where)
  if meta.get("kind") != "run":
    raise InputError(f"checkpoint {where!r} holds a state, not a run: use restore_state")
  _check_made_with(meta, memory, model.spec, where)
  keys = jax.random.key(0)[None]
  prefill = functools.partial(decoding.prefill, model.engine(memory), cache_len=meta["cache_len"],
                              buffer=1)
  carry = jax.eval_shape(lambda p: _resumable(prefill(
      p, jnp.zeros((1, 1), jnp.int32), keys, keys, 0.0, 1.0, -1)), model.params)
  return {"carry": carry, "sample_key": jax.ShapeDtypeStruct((2,), jnp.uint32),
          "tokens": jax.ShapeDtypeStruct((meta["num_tokens"],), jnp.int32)}


def rows_of(run: dict) -> dict:
  """A restored run with its carry as one-row SamplingState fields (`generation.resume`)."""
  c = run["carry"]
  row = lambda a: jnp.asarray(a)[None]
  rows = SamplingState(tokens=None, count=None, trace=None, token=row(c["token"]),
                       position=row(c["position"]), slot=row(c["position"]), t=row(c["t"]),
                       done=row(c["done"]), cache=c["cache"], memory_state=c["state"])
  return {"rows": rows, "sample_key": run["sample_key"], "tokens": run["tokens"]}


def save_run(path: str | pathlib.Path, generation, model):
  """Saves a run to `path` so that `generation.resume` continues it exactly."""
  _save_replacing(path, *run_tree(generation, model))


def restore_run(path: str | pathlib.Path, memory: Memory | None, model) -> Restored:
  """Restores a run saved by `save_run` into `model` with `memory` (both checked)."""
  path = pathlib.Path(path).absolute()
  meta = read_meta(path)
  run = _restore(path, run_target(meta, memory, model, str(path)), meta)
  return Restored(state=rows_of(run), memory=memory, meta=meta, user=meta["user"])
