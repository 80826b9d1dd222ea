"""examples/custom_memory.py: a memory written against the interface alone runs everywhere."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax.memories.base import KINDS
from tiny_models import random_model

PROMPT = "a tiny prompt"
TEXT = "It is a truth universally acknowledged, that a single man in possession. " * 8


@pytest.fixture(scope="module")
def example():
  path = pathlib.Path(__file__).parent.parent / "examples" / "custom_memory.py"
  spec = importlib.util.spec_from_file_location("custom_memory", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def model():
  return random_model(tokenizer=True)


def test_example_runs_through_generate_sweep_perplexity_and_orbax(example, model, tmp_path):
  out = example.run(model, PROMPT, TEXT, str(tmp_path / "average"))
  memory = example.AverageConfig(layer=1)
  assert KINDS["leaky-average"] is example.AverageConfig
  g = out["generation"]
  assert len(g.tokens) == 24 and g.summary() == {"kind": "leaky-average"}  # no update count
  assert g.trace is None and np.linalg.norm(memory.feedback(g.state)) > 0
  separate = aj.generate(model, PROMPT, 24, memory=memory, seed=2, temperature=0.8, top_p=0.95)
  assert out["seeds"].tokens[2] == separate.tokens  # the vmapped sweep's seed 2, run alone
  np.testing.assert_allclose(out["seeds"].states.mean[2], separate.state.mean, atol=1e-5)
  ppl = out["perplexity"]
  assert ppl.seeds == 2 and ppl.windows == 2 and np.isfinite(ppl.per_seed_ppl).all()
  assert ppl.ppl != ppl.baseline_ppl  # the feedback reached the scored passes
  restored = out["restored"]
  assert restored.memory == memory and restored.user == {"note": "leaky average"}
  assert type(restored.state) is example.AverageState
  for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(g.state)):
    np.testing.assert_array_equal(a, b)


def test_example_memory_at_zero_strength_is_the_plain_model(example, model):
  inert = example.AverageConfig(layer=1, alpha=0.0)
  base = aj.generate(model, PROMPT, 16, seed=1, temperature=0.8, top_p=0.95)
  assert aj.generate(model, PROMPT, 16, memory=inert, seed=1, temperature=0.8,
                     top_p=0.95).tokens == base.tokens
  assert aj.perplexity(model, TEXT, window=128, memory=inert).ppl == pytest.approx(
      base_ppl := aj.perplexity(model, TEXT, window=128).ppl, rel=1e-6) and base_ppl > 1


def test_example_update_is_the_leaky_average(example, model):
  """The final state equals the average recomputed in NumPy from each pass's input x: the
  host layer's attention output at the pass's last token, which the feedback (added after
  it) cannot change, so one plain pass over the generated text gives every x."""
  memory = example.AverageConfig(layer=1, rate=0.5, alpha=0.2)
  g = aj.generate(model, PROMPT, 6, memory=memory)
  prompt_len = len(g.prompt_tokens)
  x_TxD = np.asarray(model.taps(g.prompt_tokens + g.tokens, memory=memory).attn_out[0])
  mean = np.zeros(model.config.width, np.float32)
  for t in range(prompt_len - 1, prompt_len + len(g.tokens) - 1):  # the passes' last tokens
    mean = 0.5 * mean + 0.5 * x_TxD[t]
  np.testing.assert_allclose(g.state.mean, mean, atol=1e-5)
  np.testing.assert_allclose(memory.feedback(g.state), 0.2 * mean, atol=1e-5)
