"""The CLI's persistent cache of compiled programs: a rerun loads them instead of compiling.

JAX's own `JAX_COMPILATION_CACHE_DIR`, when set, is used as it is. Otherwise the cache lives in
$ATTRACTOR_JAX_COMPILE_CACHE (default ~/.cache/attractor-jax/xla; "off" for none). What it
saves: README, "Evaluate your own memory".
"""

from __future__ import annotations

import os
import pathlib

ENV = "ATTRACTOR_JAX_COMPILE_CACHE"
DEFAULT = pathlib.Path.home() / ".cache" / "attractor-jax" / "xla"


def enable(environ=os.environ) -> pathlib.Path | None:
  """Points JAX's compilation cache at the directory the environment names; returns it (None:
  no cache)."""
  import jax

  if environ.get("JAX_COMPILATION_CACHE_DIR"):
    return pathlib.Path(environ["JAX_COMPILATION_CACHE_DIR"])
  value = environ.get(ENV, str(DEFAULT))
  if value.strip().lower() in ("", "off"):
    return None
  jax.config.update("jax_compilation_cache_dir", value)
  return pathlib.Path(value)
