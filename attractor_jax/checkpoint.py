"""Orbax checkpoints of memory state (and of whole runs, to resume), with metadata.

A checkpoint directory holds two items: `state` (the pytree, restored against an abstract
target built from the metadata, so the pytree type comes back) and `meta` (JSON: the memory's
config and kind, model id and config, step, position, sampling key data, library version). Orbax writes to a
temporary directory and renames it on commit, so a killed save never replaces a good one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from attractor_jax.attractor import Timescale
from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory, abstract_state

FORMAT = "attractor-jax/3"  # 2: any memory kind, model config saved; 3: KV cache [B, K, S, X]
READABLE_STATE_FORMATS = ("attractor-jax/2", FORMAT)  # a state holds no KV cache


def config_to_dict(cfg: Memory) -> dict:
  return {"kind": cfg.kind, **dataclasses.asdict(cfg)}


def config_from_dict(d: dict) -> Memory:
  from attractor_jax.presets import kinds

  d = dict(d)
  kind = d.pop("kind")
  if kind not in kinds:
    raise ValueError(f"unknown memory kind {kind!r}")
  if kind == "attractor":
    d["timescales"] = tuple(Timescale(**t) for t in d["timescales"])
  return kinds[kind](**d)


def metadata(cfg: Memory, model, generation=None, **extra) -> dict:
  """The metadata saved beside a state: enough to rebuild its shape and check compatibility."""
  from attractor_jax import __version__

  meta = {"format": FORMAT, "library_version": __version__, "attractor_config": config_to_dict(cfg),
          "model": model.spec, "width": model.config.width,
          "model_config": dataclasses.asdict(model.config), **extra}
  if generation is not None:
    meta.update(step=int(generation.state.step) if generation.state is not None else 0,
                position=int(generation.carry.position),
                sample_key_data=np.asarray(generation.sample_key).tolist())
  return meta


@dataclasses.dataclass
class Restored:
  state: Any
  meta: dict


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def _save_replacing(path: pathlib.Path, tree, meta: dict, overwrite: bool = True):
  """Saves next to `path`, then swaps it in: the old checkpoint survives a killed save."""
  path = pathlib.Path(path).absolute()
  if path.exists() and not overwrite:
    raise InputError(f"checkpoint {str(path)!r} exists: pass overwrite=True or another path")
  path.parent.mkdir(parents=True, exist_ok=True)
  fresh = path.with_name(f".{path.name}.saving-{os.getpid()}")
  old = path.with_name(f".{path.name}.old-{os.getpid()}")
  shutil.rmtree(fresh, ignore_errors=True)
  _checkpointer().save(fresh, args=ocp.args.Composite(
      state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
  if path.exists():
    os.replace(path, old)
  os.replace(fresh, path)
  shutil.rmtree(old, ignore_errors=True)


def save_state(path: str | pathlib.Path, state, meta: dict, *, overwrite: bool = True):
  """Saves a memory state (optionally batched over seeds: leading axes) with metadata."""
  if state is None:
    raise InputError("there is no memory state to save: the preset is 'off'")
  _check_no_typed_keys(state)
  batch = tuple(np.shape(state.step))
  _save_replacing(path, state, {**meta, "batch_shape": list(batch)}, overwrite)


def read_meta(path: str | pathlib.Path) -> dict:
  """The metadata of a checkpoint; InputError when the directory is missing or damaged."""
  path = pathlib.Path(path).absolute()
  meta_file = path / "meta" / "metadata"
  if not path.is_dir():
    raise InputError(f"checkpoint {str(path)!r} does not exist: pass a directory made by save_state")
  try:
    meta = json.loads(meta_file.read_text())
  except (OSError, ValueError) as e:
    raise InputError(f"checkpoint {str(path)!r} is incomplete or corrupted ({type(e).__name__}): "
                     "restore an earlier checkpoint") from None
  found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
  run_of_old_format = isinstance(meta, dict) and meta.get("kind") == "run" and found != FORMAT
  if found not in READABLE_STATE_FORMATS or run_of_old_format:
    raise InputError(f"checkpoint {str(path)!r} has format {found!r}, not {FORMAT!r}: "
                     "save it again with this version")
  missing = [k for k in ("attractor_config", "model", "width", "model_config") if k not in meta]
  if missing:
    raise InputError(f"checkpoint {str(path)!r} metadata lacks {', '.join(missing)}: "
                     "it is corrupted; restore an earlier checkpoint")
  try:
    config_from_dict(meta["attractor_config"])
    ModelConfig(**meta["model_config"])
  except (TypeError, KeyError, ValueError) as e:
    raise InputError(f"checkpoint {str(path)!r} has an unreadable memory or model config ({e})") from None
  return meta


def restore_state(path: str | pathlib.Path, *, expect_config: Memory | None = None,
                  expect_model: str | None = None) -> Restored:
  """Restores a memory state saved by `save_state`, refusing a different config or model."""
  path = pathlib.Path(path).absolute()
  meta = read_meta(path)
  cfg = config_from_dict(meta["attractor_config"])
  if expect_config is not None and expect_config != cfg:
    raise InputError(f"checkpoint {str(path)!r} was made with a different memory config "
                     f"({_diff(cfg, expect_config)}): use the same preset or config")
  if expect_model is not None and expect_model != meta["model"]:
    raise InputError(f"checkpoint {str(path)!r} was made with model {meta['model']!r}, "
                     f"not {expect_model!r}: restore it into the same model")
  target = abstract_state(cfg, ModelConfig(**meta["model_config"]),
                          tuple(meta.get("batch_shape", [])))
  state = _restore(path, target)
  for leaf_path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all():
      name = jax.tree_util.keystr(leaf_path).lstrip(".")
      raise InputError(f"checkpoint {str(path)!r}: state.{name} has NaN or Inf values")
  return Restored(state=state, meta=meta)


def _restore(path: pathlib.Path, target):
  """Restores the `state` item against an abstract target; InputError when it is damaged."""
  try:
    return _checkpointer().restore(path, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
  except Exception as e:  # orbax raises many types on damaged directories
    raise InputError(f"checkpoint {str(path)!r} is incomplete or corrupted "
                     f"({type(e).__name__}): restore an earlier checkpoint") from None


def _diff(a: Memory, b: Memory) -> str:
  da, db = config_to_dict(a), config_to_dict(b)
  keys = [k for k in {**da, **db} if da.get(k) != db.get(k)]
  return ", ".join(f"{k}: saved {da.get(k)!r} vs given {db.get(k)!r}" for k in keys[:3])


def _check_no_typed_keys(tree):
  for leaf in jax.tree.leaves(tree):
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
      raise InputError("a typed PRNG key cannot be checkpointed: store jax.random.key_data(key)")


def run_tree(generation, cfg: Memory, model) -> tuple[dict, dict]:
  """The (pytree, metadata) of a run: KV cache, memory state, last token, position, keys.

  The cache is saved, not rebuilt: it depends on the feedback each pass received.
  """
  carry = generation.carry
  tree = {"carry": carry, "sample_key": jnp.asarray(generation.sample_key),
          "tokens": jnp.asarray(generation.prompt_tokens + generation.tokens, jnp.int32)}
  _check_no_typed_keys(tree)
  meta = metadata(cfg, model, generation, kind="run", cache_len=int(carry.cache.max_len),
                  num_tokens=int(tree["tokens"].shape[0]), prompt_len=len(generation.prompt_tokens))
  return tree, meta


def run_target(meta: dict, cfg: Memory, model, where: str) -> dict:
  """The abstract pytree a saved run restores into, after checking config and model."""
  from attractor_jax.sampling import prefill

  if meta.get("kind") != "run":
    raise InputError(f"checkpoint {where!r} holds a state, not a run: use restore_state")
  saved = config_from_dict(meta["attractor_config"])
  if saved != cfg:
    raise InputError(f"checkpoint {where!r} was made with a different memory config "
                     f"({_diff(saved, cfg)}): use the same preset or config")
  if meta["model"] != model.spec:
    raise InputError(f"checkpoint {where!r} was made with model {meta['model']!r}, "
                     f"not {model.spec!r}: restore it into the same model")
  key = jax.random.key(0)
  carry_shape, _ = jax.eval_shape(
      lambda p: prefill(p, jnp.zeros((1,), jnp.int32), key, key, 0.0, 1.0, None,
                        decoder=model.decoder, cfg=cfg, cache_len=meta["cache_len"], eos_id=-1),
      model.params)
  return {"carry": carry_shape, "sample_key": jax.ShapeDtypeStruct((2,), jnp.uint32),
          "tokens": jax.ShapeDtypeStruct((meta["num_tokens"],), jnp.int32)}


def save_run(path: str | pathlib.Path, generation, cfg: Memory, model):
  """Saves a run to `path` so that `resume` continues it exactly."""
  _save_replacing(path, *run_tree(generation, cfg, model))


def restore_run(path: str | pathlib.Path, cfg: Memory, model) -> Restored:
  """Restores a run saved by `save_run` into `model` with config `cfg` (both checked)."""
  path = pathlib.Path(path).absolute()
  meta = read_meta(path)
  return Restored(state=_restore(path, run_target(meta, cfg, model, str(path))), meta=meta)
