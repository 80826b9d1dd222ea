"""Writing that never loses data: every writer of this library goes through here.

- Only what this library wrote is replaced: a file or directory at the target that a
  writer's `ours` test does not recognise is refused (InputError naming it), untouched.
- A replacement is atomic: the new file or directory is complete (and synced) under a
  temporary name beside the target before it takes the target's place (a rename, or for
  directories an exchange of the two names), so a kill leaves the old or the new, whole.
- A failed write (no space left, a read-only place, a vanished parent) raises InputError
  naming the path and the error, after removing its temporary files; the target is intact.
- Temporary names carry the writer's pid: the next write to the same place removes those of
  writers that are no longer running.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import pathlib
import re
import shutil
from typing import Callable, Iterator

import numpy as np

from attractor_jax.errors import InputError

MARK = "attractor-jax"  # the `written_by` field of every JSON result this library writes
_TEMP = re.compile(r"^\.(?P<name>.+)\.attractor-(?P<kind>tmp|old)-(?P<pid>\d+)-")


def temp_path(path: pathlib.Path, kind: str = "tmp") -> pathlib.Path:
  """A fresh temporary name beside `path`, marked with this process's pid."""
  return path.with_name(f".{path.name}.attractor-{kind}-{os.getpid()}-{os.urandom(4).hex()}")


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_leftovers(path: pathlib.Path):
  """Removes the temporary files and directories that killed writers left beside `path`
  (orbax's own temporary directories inside them included). A writer killed between moving
  the old directory aside and putting the new one in place left only the old one: it is put
  back instead."""
  parent = path.parent
  if not parent.is_dir():
    return
  for entry in sorted(parent.iterdir()):
    found = _TEMP.match(entry.name)
    if not found or found["name"] != path.name or _running(int(found["pid"])):
      continue
    if found["kind"] == "old" and not path.exists():
      os.replace(entry, path)
    else:
      _remove(entry)


def _remove(p: pathlib.Path):
  """Removes a file or directory tree if it is there (best effort: cleaning up never fails)."""
  if p.is_dir() and not p.is_symlink():
    shutil.rmtree(p, ignore_errors=True)
  elif p.exists() or p.is_symlink():
    with contextlib.suppress(OSError):
      p.unlink()


def claim(path: str | os.PathLike, ours: Callable[[pathlib.Path], bool], what: str) -> pathlib.Path:
  """`path` as a Path, after refusing an existing file or directory there that `ours` does not
  recognise (an empty directory holds nothing to lose and is taken)."""
  path = pathlib.Path(path).absolute()
  if path.is_symlink() or (path.exists() and not (_empty_dir(path) or ours(path))):
    kind = "directory" if path.is_dir() else "file"
    raise InputError(f"{str(path)!r} is an existing {kind} that attractor-jax did not write: "
                     f"choose another path for the {what}, or remove it yourself")
  return path


def _empty_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and not any(path.iterdir())


@contextlib.contextmanager
def reported(path: pathlib.Path, *temporaries: pathlib.Path) -> Iterator[None]:
  """Turns an OSError (found directly or as the cause of another error) into InputError naming
  `path` and the error, after removing `temporaries`; other errors also remove them."""
  try:
    yield
  except BaseException as e:
    for t in temporaries:
      _remove(t)
      for orbax_tmp in t.parent.glob(f"{t.name}.orbax-checkpoint-tmp*"):
        _remove(orbax_tmp)
    cause = _os_error(e) if isinstance(e, Exception) else None
    if cause is None or isinstance(e, InputError):
      raise
    name = errno.errorcode.get(cause.errno, "error")
    raise InputError(f"cannot write {str(path)!r}: {cause.strerror or cause} ({name}); nothing "
                     "was replaced: free space or choose a writable place") from None


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind `e`: itself, its explicit causes, or named by a tensorstore message
  (orbax's writer reports "[os_error_code='28']" inside a ValueError)."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError) and e.errno is not None:
      return e
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if code:
      return OSError(int(code[1]), os.strerror(int(code[1])))
    seen.add(id(e))
    e = e.__cause__
  return None


def _synced_file(path: pathlib.Path, write: Callable, mode: str):
  with open(path, mode) as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())


def write_file_atomic(path: str | os.PathLike, write: Callable, *, ours: Callable, what: str,
                      mode: str = "w") -> pathlib.Path:
  """Writes a file through `write(f)` under a temporary name, then renames it onto `path`."""
  path = claim(path, ours, what)
  tmp = temp_path(path)
  with reported(path, tmp):
    _make_dirs(path.parent)
    remove_leftovers(path)
    _synced_file(tmp, write, mode)
    os.replace(tmp, path)
  return path


def write_json_atomic(path: str | os.PathLike, obj) -> pathlib.Path:
  """Writes `obj` (a dict gets `written_by`) as JSON to `path`, atomically; refuses to replace
  a file that is not one of this library's JSON results."""
  if isinstance(obj, dict):
    obj = {"written_by": MARK, **obj}
  return write_file_atomic(path, lambda f: json.dump(obj, f, indent=1), ours=is_our_json,
                           what="result")


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> pathlib.Path:
  """Writes named arrays as an .npz to `path`, atomically (replacing only an .npz)."""
  return write_file_atomic(path, lambda f: np.savez(f, **arrays), ours=_is_npz, what="arrays",
                           mode="wb")


def write_png_atomic(path: str | os.PathLike, figure) -> pathlib.Path:
  """Saves a matplotlib figure as a PNG to `path`, atomically (replacing only a PNG)."""
  return write_file_atomic(path, lambda f: figure.savefig(f, format="png", dpi=100),
                           ours=_is_png, what="plot", mode="wb")


def write_text_atomic(path: str | os.PathLike, text: str, *, first_line: str) -> pathlib.Path:
  """Writes a text file atomically, replacing only a file whose first line is `first_line`
  (the line this writer always starts with)."""
  if not text.startswith(first_line + "\n"):
    raise ValueError(f"text must start with {first_line!r}")
  return write_file_atomic(path, lambda f: f.write(text), ours=first_line_is(first_line),
                           what="report")


def first_line_is(line: str) -> Callable[[pathlib.Path], bool]:
  """Recognises a text file by its first line."""

  def ours(p: pathlib.Path) -> bool:
    if not p.is_file():
      return False
    with open(p, errors="replace") as f:
      return f.readline().rstrip("\n") == line

  return ours


def is_our_json(p: pathlib.Path) -> bool:
  """A JSON object this library wrote: marked `written_by`, or (results of earlier versions)
  carrying the git commit and machine every result records."""
  try:
    obj = json.loads(p.read_text())
  except (OSError, ValueError):
    return False
  return isinstance(obj, dict) and (obj.get("written_by") == MARK
                                    or {"git_commit", "machine"} <= set(obj))


def _is_png(p: pathlib.Path) -> bool:
  try:
    with open(p, "rb") as f:
      return f.read(8) == b"\x89PNG\r\n\x1a\n"
  except OSError:
    return False


def _is_npz(p: pathlib.Path) -> bool:
  try:
    with np.load(p) as z:
      return "key" in z.files
  except (OSError, ValueError, EOFError):
    return False


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
  """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(err, os.strerror(err), str(b))


def replace_dir_atomic(path: str | os.PathLike, write: Callable[[pathlib.Path], None], *,
                       ours: Callable[[pathlib.Path], bool], what: str) -> pathlib.Path:
  """Builds a directory through `write(tmp)` beside `path`, then puts it in `path`'s place.

  Writers to one path take turns for the swap (a lock on the parent directory), so two at
  once leave one complete directory, the last one's.
  """
  path = claim(path, ours, what)
  fresh = temp_path(path)
  with reported(path, fresh):
    _make_dirs(path.parent)
    remove_leftovers(path)
    write(fresh)
    with _locked(path.parent):
      claim(path, ours, what)  # another process may have put something there meanwhile
      if not path.exists():
        os.replace(fresh, path)
      elif _exchange(fresh, path):
        _remove(fresh)  # now the old directory
      else:  # two renames; a kill between them is undone by the next write (remove_leftovers)
        old = temp_path(path, "old")
        os.replace(path, old)
        try:
          os.replace(fresh, path)
        except BaseException:
          os.replace(old, path)
          raise
        _remove(old)
  return path


@contextlib.contextmanager
def _locked(directory: pathlib.Path) -> Iterator[None]:
  fd = os.open(directory, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def writable_dir(path: str | os.PathLike, ours: Callable[[pathlib.Path], bool],
                 what: str) -> pathlib.Path:
  """A directory this library fills with its own files (a resume or run directory): refused
  when it exists holding anything `ours` does not recognise; created otherwise."""
  path = claim(path, ours, what)
  with reported(path):
    _make_dirs(path)
  return path


def _make_dirs(directory: pathlib.Path):
  """Creates `directory` and its parents; the nearest existing one must be a directory."""
  existing = next(p for p in (directory, *directory.parents) if p.exists() or p.is_symlink())
  if not existing.is_dir():
    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
  directory.mkdir(parents=True, exist_ok=True)
