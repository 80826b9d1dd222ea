"""`--memory` as a user gives it: a preset NAME, `package.module:Class` or `path/file.py:Class`."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib

from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory
from attractor_jax.presets import presets

FIX = "pass a preset name, package.module:Class or path/file.py:Class"


def load_memory(spec: str) -> Memory:
  """The memory `spec` names; a class is constructed with no arguments."""
  if spec in presets:
    if presets[spec] is None:
      raise InputError(f"--memory {spec!r} is no memory: {FIX}")
    return presets[spec]
  if ":" not in spec:
    raise InputError(f"--memory {spec!r} is not a preset ({', '.join(sorted(presets))}): {FIX}")
  where, name = spec.rsplit(":", 1)
  module = _module(spec, where)
  target = getattr(module, name, None)
  if target is None:
    raise InputError(f"--memory {spec!r}: {where} has no {name!r}: {FIX}")
  if isinstance(target, type):
    if not issubclass(target, Memory):
      raise InputError(f"--memory {spec!r}: {name} is not a subclass of attractor_jax.Memory")
    try:
      target = target()
    except Exception as e:  # a user's class: any failure is theirs to see, in one line
      raise InputError(f"--memory {spec!r}: {name}() failed ({type(e).__name__}: {e}): give "
                       "every field a default") from None
  if not isinstance(target, Memory):
    raise InputError(f"--memory {spec!r}: {name} is not an attractor_jax.Memory")
  return target


def _module(spec: str, where: str):
  if where.endswith(".py"):
    path = pathlib.Path(where)
    if not path.is_file():
      raise InputError(f"--memory {spec!r}: file {where!r} does not exist: {FIX}")
    loader = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(loader)
    try:
      loader.loader.exec_module(module)
    except Exception as e:
      raise InputError(f"--memory {spec!r}: importing {where} failed "
                       f"({type(e).__name__}: {e})") from None
    return module
  try:
    return importlib.import_module(where)
  except ImportError as e:
    raise InputError(f"--memory {spec!r}: module {where!r} cannot be imported ({e}): {FIX}") \
        from None
