"""Where and from what a result was measured: the machine and the git commit (results record both).

Result files are written by `writing`."""

from __future__ import annotations

import os
import pathlib


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
