"""Result files: written atomically (temp file + rename), so a kill never leaves half a file."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile


def write_json_atomic(path: str | os.PathLike, obj) -> pathlib.Path:
  """Writes `obj` as JSON to `path` via a temporary file in the same directory and a rename."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path
