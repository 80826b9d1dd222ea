"""Long generations in chunks, each chunk saved by an orbax CheckpointManager (last N kept).

A run killed at any point restarts from its newest checkpoint that restores; a damaged
newest one falls back to the one before.
"""

from __future__ import annotations

import pathlib
import re

import orbax.checkpoint as ocp

from attractor_jax import checkpoint, writing
from attractor_jax.errors import InputError
from attractor_jax.generation import Generation, generate, resume
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.validation import check_int


_STEP = re.compile(r"^\d+(\.orbax-checkpoint-tmp.*)?$")


def is_run_dir(path: pathlib.Path) -> bool:
  """A directory holding only a CheckpointManager's step directories (and its temporaries)."""
  return path.is_dir() and all(_STEP.match(p.name) and p.is_dir() for p in path.iterdir())


def _manager(run_dir, keep: int) -> ocp.CheckpointManager:
  """The run's CheckpointManager; it removes the temporaries of killed saves on start."""
  path = writing.writable_dir(run_dir, is_run_dir, "run checkpoints")
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(path, options=options)


def latest_good(run_dir, memory: Memory | None, model: Model, keep: int = 3):
  """(tokens generated, restored run) of the newest checkpoint that restores; None if none."""
  mngr = _manager(run_dir, keep)
  for step in sorted(mngr.all_steps(), reverse=True):
    where = f"{run_dir}/{step}"
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      target = checkpoint.run_target(meta, memory, model, where)
      restore = lambda tree: mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(tree)))["state"]
      return step, checkpoint.rows_of(restore(target))
    except InputError:
      raise
    except Exception:  # a damaged checkpoint: try the one before
      continue
  return None


def _save(mngr: ocp.CheckpointManager, g: Generation, model: Model, done: int) -> dict:
  tree, meta = checkpoint.run_tree(g, model)
  with writing.reported(mngr.directory / str(done)):
    mngr.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                            meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()  # the next chunk donates these buffers
  return checkpoint.rows_of(tree)


def generate_checkpointed(model: Model, prompt, max_new_tokens: int, *, run_dir,
                          memory: Memory | None, every: int = 100, keep: int = 3,
                          seed: int = 0, temperature: float = 0.0,
                          top_p: float = 1.0) -> list[int]:
  """Generates `max_new_tokens` in chunks of `every`, checkpointing after each chunk.

  Restarts from the newest good checkpoint in `run_dir`. A chunk whose memory state goes
  NaN or Inf raises InputError and is not saved: the last good checkpoint stays the newest.
  Returns the generated token ids.
  """
  check_int("every", every, 1)
  check_int("keep", keep, 1)
  mngr = _manager(run_dir, keep)
  found = latest_good(run_dir, memory, model, keep)
  if found is None:
    g = generate(model, prompt, min(every, max_new_tokens), memory=memory, seed=seed,
                 temperature=temperature, top_p=top_p)
    done = len(g.tokens)
    run = _save(mngr, g, model, done)
  else:
    done, run = found
  while done < max_new_tokens and not bool(run["rows"].done[0]):
    try:
      g = resume(model, run, min(every, max_new_tokens - done), memory=memory,
                 temperature=temperature, top_p=top_p)
    except InputError as e:
      raise InputError(f"{e} (the last good checkpoint, after {done} tokens, is kept in "
                       f"{str(run_dir)!r})") from None
    done += len(g.tokens)
    run = _save(mngr, g, model, done)
  tokens = [int(t) for t in run["tokens"]]
  return tokens[len(tokens) - done:]
