"""The CLI's persistent cache of compiled programs: a rerun loads them instead of compiling.

JAX's own `JAX_COMPILATION_CACHE_DIR`, when set, is used as it is. Otherwise the cache lives in
$ATTRACTOR_JAX_COMPILE_CACHE (default: `xla` in the project's cache directory, beside the
joined model files: `weights.chunks.cache_dir`; "off" for none). What it saves: README,
"Evaluate your own memory".
"""

from __future__ import annotations

import os
import pathlib

from attractor_jax.weights.chunks import cache_dir

ENV = "ATTRACTOR_JAX_COMPILE_CACHE"


def enable(environ=os.environ) -> pathlib.Path | None:
  """Points JAX's compilation cache at the directory the environment names; returns it (None:
  no cache)."""
  import jax

  if environ.get("JAX_COMPILATION_CACHE_DIR"):
    return pathlib.Path(environ["JAX_COMPILATION_CACHE_DIR"])
  value = environ.get(ENV) or str(cache_dir() / "xla")
  if value.strip().lower() == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", value)
  return pathlib.Path(value)
