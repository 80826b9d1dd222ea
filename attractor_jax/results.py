"""Result files: written atomically (temp file + rename), so a kill never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

import numpy as np


@contextlib.contextmanager
def _atomic(path: pathlib.Path, mode: str):
  """A temporary file beside `path`, renamed onto it only after a complete, synced write."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def write_json_atomic(path: str | os.PathLike, obj) -> pathlib.Path:
  """Writes `obj` as JSON to `path` via a temporary file in the same directory and a rename."""
  path = pathlib.Path(path)
  with _atomic(path, "w") as f:
    json.dump(obj, f, indent=1)
  return path


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> pathlib.Path:
  """Writes named arrays as an .npz to `path`, atomically as `write_json_atomic`."""
  path = pathlib.Path(path)
  with _atomic(path, "wb") as f:
    np.savez(f, **arrays)
  return path


def machine_info() -> dict:
  """Where a result was measured: platform, CPU, core count, JAX version and devices."""
  import platform

  import jax

  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpus": os.cpu_count(), "jax": jax.__version__, "devices": str(jax.devices())}


def git_commit() -> str | None:
  """The commit of the source tree that produced a result; None outside a git checkout."""
  import subprocess

  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pathlib.Path(__file__).parent,
                         capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None
