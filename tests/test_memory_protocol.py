"""A memory written against the Memory protocol alone (no `step`, no `feedback` field, no gate,
its own Info) runs wherever a built-in one does; generic code asks it, never its fields."""

import dataclasses
import json

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax.errors import InputError
from attractor_jax.memories.base import KINDS, pool
from tiny_models import random_model

PROMPT = [5, 17, 33, 2, 60, 8, 41]
TEXT = "It is a truth universally acknowledged, that a single man in possession. " * 6


@flax.struct.dataclass
class EchoState:
  echo: jax.Array  # [D]: the last pass's pooled attention output, decayed


@flax.struct.dataclass
class EchoInfo:  # not an aj.Info: any pytree will do
  energy: jax.Array  # []


@dataclasses.dataclass(frozen=True, kw_only=True)
class Echo(aj.Memory):
  """Feeds back `gain` times a decayed echo of the attention output."""

  kind = "echo-protocol-test"
  starts_silent = True
  nonfinite_hint = "lower gain"
  gain: float = 0.5
  refuse_scoring: bool = False

  def fresh_state(self, model_config, key, prompt_attn_TxD=None):
    return EchoState(echo=jnp.zeros((model_config.width,), jnp.float32))

  def observe(self, state, obs, params):
    echo = 0.5 * state.echo + pool(obs.attn_out, "mean")
    return EchoState(echo=echo), EchoInfo(energy=jnp.sum(echo ** 2))

  def feedback(self, state):
    return self.gain * state.echo

  def activity(self, info):
    return {"energy": info.energy}

  def check_task(self, task):
    if self.refuse_scoring and task == "scoring":
      raise InputError("echo cannot score: pass refuse_scoring=False")


@pytest.fixture(scope="module")
def model():
  yield random_model(0, tokenizer=True)
  KINDS.pop(Echo.kind, None)


def test_generate_with_trace_and_json(model):
  g = aj.generate(model, PROMPT, 12, memory=Echo(layer=1), trace=True)
  off = aj.generate(model, PROMPT, 12)
  assert len(g.tokens) == 12 and g.summary() == {"kind": Echo.kind}
  assert g.trace.info.energy.shape == (12,) and (g.trace.info.energy > 0).all()
  assert g.trace.feedback_ratio[0] == 0 and (g.trace.feedback_ratio[1:] > 0).all()
  assert json.loads(json.dumps(g.to_json()))["memory"] == {"kind": Echo.kind}
  assert g.trace.finite.all() and g.tokens != off.tokens  # the feedback acted


def test_vmapped_seed_sweep_equals_separate_runs(model):
  runs = aj.generate_seeds(model, PROMPT, 10, memory=Echo(layer=1), seeds=3, temperature=1.0)
  assert runs.summaries() == [{"kind": Echo.kind}] * 3
  for seed in range(3):
    one = aj.generate(model, PROMPT, 10, memory=Echo(layer=1), seed=seed, temperature=1.0)
    assert runs.tokens[seed] == one.tokens
    np.testing.assert_allclose(runs.states.echo[seed], one.state.echo, atol=1e-5)
  out = aj.sweep(model, "generate", memory=Echo(layer=1), seeds=2, prompt=PROMPT,
                 max_new_tokens=6)
  assert out.memory == [{"kind": Echo.kind}] * 2


def test_perplexity_reports_the_memory_activity(model):
  ppl = aj.perplexity(model, TEXT, window=64, memory=Echo(layer=1), seeds=2)
  assert np.isfinite(ppl.per_seed_ppl).all() and ppl.ppl != ppl.baseline_ppl
  assert ppl.to_json()["energy"] > 0 and not {"gate_open", "activity"} & set(ppl.to_json())
  with pytest.raises(InputError, match="echo cannot score"):
    aj.perplexity(model, TEXT, window=64, memory=Echo(layer=1, refuse_scoring=True))


def test_orbax_round_trip(model, tmp_path):
  g = aj.generate(model, PROMPT, 6, memory=Echo(layer=1))
  aj.save_state(tmp_path / "echo", g.state, memory=Echo(layer=1), model=model, note="x")
  restored = aj.restore_state(tmp_path / "echo", memory=Echo(layer=1), model=model)
  assert type(restored.state) is EchoState and restored.user == {"note": "x"}
  np.testing.assert_array_equal(restored.state.echo, g.state.echo)
  more = aj.generate(model, PROMPT, 4, memory=Echo(layer=1), state=restored.state)
  assert len(more.tokens) == 4


def test_a_nan_names_the_memory_and_its_own_hint(model):
  with pytest.raises(InputError, match=r"memory 'echo-protocol-test'.*: lower gain, or restore") \
      as err:
    aj.generate(model, PROMPT, 8, memory=Echo(layer=1, gain=float("inf")))
  assert "alpha" not in str(err.value) and "memory update" not in str(err.value)
