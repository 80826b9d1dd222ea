"""Where and from what a result was measured: the machine and the git commit (results record both).

Result files are written by `writing`."""

from __future__ import annotations

import functools
import os
import pathlib


def machine_info() -> dict:
  """Where a result was measured: platform, CPU, core count, JAX version and devices."""
  import platform

  import jax

  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpus": os.cpu_count(), "jax": jax.__version__, "devices": str(jax.devices())}


@functools.cache
def git_commit() -> str | None:
  """The commit of the source tree that produced a result, as it was at this process's first
  call (call early in a long run: a commit made while it runs is not the code it ran); None
  outside a git checkout."""
  import subprocess

  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pathlib.Path(__file__).parent,
                         capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def git_blob_hash(data: bytes) -> str:
  """The hash git gives a file of these bytes (`git hash-object`)."""
  import hashlib

  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_HASHED: dict[str, str] = {}  # path -> its blob hash when this process first read it


def sources() -> dict[str, str]:
  """The git blob hash of every project file this process imported, by path from the
  repository root: compare with `git hash-object` to tell whether a result's code changed.
  A file is hashed once per process, at the first call that sees it: call early in a long
  run, so that an edit while it runs does not pass for the code it ran."""
  import sys

  root = pathlib.Path(__file__).resolve().parent.parent
  for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if not path:
      continue
    path = pathlib.Path(path).resolve()
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
    if (name and name not in _HASHED and path.suffix == ".py" and ".venv" not in path.parts
        and path.is_file()):  # a module may name a file relative to where it was built
      _HASHED[name] = git_blob_hash(path.read_bytes())
  return dict(sorted(_HASHED.items()))


def provenance(wall_s: float) -> dict:
  """What every result file records: commit, machine, wall time and `sources`."""
  return {"git_commit": git_commit(), "machine": machine_info(), "wall_s": round(wall_s, 1),
          "sources": sources()}
