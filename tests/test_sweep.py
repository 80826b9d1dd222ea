"""Seed sweeps on a tiny random model: sharded == unsharded, vmapped == one run per seed."""

import dataclasses
import subprocess
import sys
import textwrap

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attractor_jax import seed_sweep as sweep
from attractor_jax.decoding import read_bounds
from attractor_jax.engine import Engine
from attractor_jax.errors import InputError
from attractor_jax.generation import generate
from attractor_jax.memories.base import KINDS, Info, Memory
from attractor_jax.presets import presets
from attractor_jax.seed_sweep import SeedRuns, Sweep
from attractor_jax.seeds import seed_list
from conftest import child_env
from tiny_models import random_model

CFG = dataclasses.replace(presets["seed"], layer=1)  # the tiny model has 2 layers
PROMPT = [5, 17, 33, 2, 60, 8, 41]
STATE_TOL = 1e-5
# A 2-layer llama with random params N(0, 0.02^2) (no tokenizer: ids in, eos -1).
TINY = dict(vocab_size=300, width=32, num_heads=4, num_kv_heads=2, mlp_width=48, max_len=128,
            tie_embeddings=False, scale=0.02)


@pytest.fixture(scope="module")
def model():
  return random_model(0, **TINY)


def run_python(code: str, tmp_path, *, devices: int = 1, timeout: float = 300):
  """Runs `code` in a fresh interpreter with `devices` host CPU devices; fails on error."""
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                       env=child_env(devices=devices), cwd=tmp_path,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"subprocess failed:\n{out.stdout}\n{out.stderr[-4000:]}"
  return out


def _state_leaves(states) -> dict:
  return {f.name: np.asarray(getattr(states, f.name)) for f in dataclasses.fields(states)}


_SHARDED = """
import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
from attractor_jax import decoding, seed_sweep as sweep
from attractor_jax.seeds import seed_keys
from test_sweep import CFG, PROMPT, TINY
from conftest import child_env
from tiny_models import random_model

jax.config.update("jax_numpy_rank_promotion", "raise")
assert jax.device_count() == 8, jax.devices()
keys = sweep.shard_seeds(jnp.stack([seed_keys(s)[0] for s in range(8)]))
assert len(keys.sharding.device_set) == 8
assert [s.data.shape for s in keys.addressable_shards] == [(1,)] * 8

seen = []  # device count of the rows, the sampling keys and the tokens of every decode loop
inner = decoding.decode
def spy(engine, params, rows, sample_keys, *args, **kw):
  rows_on = len(rows.token.sharding.device_set)
  out = inner(engine, params, rows, sample_keys, *args, **kw)
  seen.append((rows_on, len(sample_keys.sharding.device_set),
               len(out.tokens.sharding.device_set)))
  return out
decoding.decode = spy

model = random_model(0, **TINY)
kw = dict(memory=CFG, temperature=0.8)
one_device = [jax.devices()[0]]
runs = {"sharded": sweep.generate_seeds(model, PROMPT, 16, seeds=8, **kw),
        "single": sweep.generate_seeds(model, PROMPT, 16, seeds=8, devices=one_device, **kw),
        "padded": sweep.generate_seeds(model, PROMPT, 16, seeds=[0, 1, 2, 3, 4], **kw)}
assert seen == [(8, 8, 8), (1, 1, 1), (8, 8, 8)], seen
for name, run in runs.items():
  np.save(f"{name}_tokens.npy", np.asarray(run.tokens))
  np.savez(f"{name}_states.npz", **{f.name: np.asarray(getattr(run.states, f.name))
                                     for f in dataclasses.fields(run.states)})
"""


def test_sharded_over_8_devices_equals_unsharded(tmp_path):
  run_python(_SHARDED, tmp_path, devices=8)
  tokens = {n: np.load(tmp_path / f"{n}_tokens.npy") for n in ("sharded", "single", "padded")}
  states = {n: dict(np.load(tmp_path / f"{n}_states.npz")) for n in ("sharded", "single", "padded")}
  assert tokens["sharded"].shape == (8, 16)
  assert len({tuple(t) for t in tokens["sharded"]}) == 8  # the seeds really differ
  np.testing.assert_array_equal(tokens["sharded"], tokens["single"])
  np.testing.assert_array_equal(tokens["padded"], tokens["sharded"][:5])
  for name, want in states["single"].items():
    assert want.shape[0] == 8
    np.testing.assert_allclose(states["sharded"][name], want, atol=STATE_TOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(states["padded"][name], want[:5], atol=STATE_TOL, rtol=0,
                               err_msg=name)


def test_vmapped_seeds_equal_separate_runs(model):
  seeds = list(range(16))
  batched = sweep.generate_seeds(model, PROMPT, 12, memory=CFG, seeds=seeds, temperature=1.0)
  assert isinstance(batched, SeedRuns) and batched.memory == CFG
  assert batched.seeds == seeds and batched.prompt_tokens == PROMPT
  leaves = _state_leaves(batched.states)
  assert len({tuple(t) for t in batched.tokens}) == 16
  for i, seed in enumerate(seeds):
    one = generate(model, PROMPT, 12, memory=CFG, seed=seed, temperature=1.0)
    assert batched.tokens[i] == one.tokens, f"seed {seed}"
    for name, want in _state_leaves(one.state).items():
      np.testing.assert_allclose(leaves[name][i], want, atol=STATE_TOL, rtol=0,
                                 err_msg=f"seed {seed}: state.{name}")
    assert int(leaves["step"][i]) == 12  # one update per pass: the prompt, then 11 decodes
  summaries = batched.summaries()
  assert [s["step"] for s in summaries] == [12] * 16
  assert summaries[3] == CFG.summary(jax.tree.map(lambda a: a[3], batched.states))
  assert batched.to_json() == {"seeds": seeds, "prompt_tokens": PROMPT,
                               "tokens": batched.tokens, "memory": summaries}


def test_no_memory_runs_have_no_states_and_are_the_baseline(model):
  """memory=None (preset off): no states, no summaries, no memory info in the trace; the
  tokens are plain generate's without a memory."""
  assert presets["off"] is None
  off = sweep.generate_seeds(model, PROMPT, 12, memory=None, seeds=[0, 1], temperature=1.0)
  assert off.states is None and off.memory is None and off.summaries() is None
  assert off.trace.info is None  # no memory info; the logits are still checked finite
  assert off.trace.finite.shape == (2, 128) and off.trace.finite[:, :12].all()
  assert off.to_json()["memory"] is None
  for i in range(2):
    assert off.tokens[i] == generate(model, PROMPT, 12, memory=None, seed=i,
                                     temperature=1.0).tokens


def test_sweep_generate_reports_metrics_summaries_and_paired_stats(model):
  seeds = [9, 2, 14, 0, 7, 30, 1, 5, 11, 3, 8, 21, 4, 6, 12, 10]  # shapes as above: no recompile
  out = sweep.sweep(model, "generate", memory=CFG, seeds=seeds, prompt=PROMPT,
                    max_new_tokens=12, temperature=1.0)
  assert isinstance(out, Sweep) and out.perplexity is None
  metrics = {"seq_rep_4", "rep_128", "distinct_1", "distinct_2", "length"}
  assert out.task == "generate" and out.seeds == seeds
  assert len(out.per_seed) == len(out.per_seed_off) == len(seeds)
  for row in out.per_seed + out.per_seed_off:
    assert set(row) == metrics and row["length"] == 12.0
    assert 0.0 <= row["distinct_1"] <= 1.0
  assert set(out.summary) == set(out.paired_vs_off) == metrics
  for m in metrics:
    layer = np.array([row[m] for row in out.per_seed])
    off = np.array([row[m] for row in out.per_seed_off])
    s = out.summary[m]
    assert s["n"] == len(seeds) and s["mean"] == pytest.approx(layer.mean())
    lo, hi = s["ci95"]
    assert lo - 1e-12 <= s["mean"] <= hi + 1e-12
    p = out.paired_vs_off[m]
    assert p["n"] == len(seeds) and p["mean_diff"] == pytest.approx((layer - off).mean())
    assert 0.0 < p["p_value"] <= 1.0 and len(p["ci95"]) == 2
  assert [a["step"] for a in out.memory] == [12] * len(seeds)
  assert out.texts == [""] * len(seeds)  # no tokenizer
  assert out.to_json() == {
      "task": "generate", "seeds": seeds, "per_seed": out.per_seed,
      "per_seed_off": out.per_seed_off, "summary": out.summary,
      "paired_vs_off": out.paired_vs_off, "texts": out.texts, "memory": out.memory}
  # the layer run is generate_seeds with the same seeds, the off run the same without memory
  again = sweep.generate_seeds(model, PROMPT, 12, memory=CFG, seeds=seeds, temperature=1.0)
  assert [r["length"] for r in out.per_seed] == [float(len(t)) for t in again.tokens]
  assert out.per_seed == [sweep.generation_metrics(t) for t in again.tokens]
  assert out.memory == again.summaries()
  base = sweep.generate_seeds(model, PROMPT, 12, memory=None, seeds=seeds, temperature=1.0)
  assert out.per_seed_off == [sweep.generation_metrics(t) for t in base.tokens]


def test_sweep_refuses_bad_task_and_missing_prompt(model):
  with pytest.raises(InputError, match="unknown"):
    sweep.sweep(model, "dance", memory=CFG, seeds=2, prompt=PROMPT)
  with pytest.raises(InputError, match="prompt"):
    sweep.sweep(model, "generate", memory=CFG, seeds=2)
  with pytest.raises(InputError, match="text"):
    sweep.sweep(model, "ppl", memory=CFG, seeds=2)


def test_seed_list():
  assert seed_list(3) == [0, 1, 2]
  assert seed_list(np.int64(2)) == [0, 1]
  assert seed_list([7, 0, 2]) == [7, 0, 2]
  for bad in (0, -1, -5, [], (), [-1], [0, -2]):
    with pytest.raises(InputError, match="seeds="):
      seed_list(bad)


def test_generate_seeds_refuses_bad_seeds_and_layer(model):
  with pytest.raises(InputError, match="seeds="):
    sweep.generate_seeds(model, PROMPT, 4, memory=CFG, seeds=0)
  with pytest.raises(InputError, match="layer=15"):
    sweep.generate_seeds(model, PROMPT, 4, memory=dataclasses.replace(presets["seed"], layer=15),
                         seeds=2)


@pytest.mark.parametrize("bad", [True, 2.5, [1.7], [True, 2]])
def test_seed_list_refuses_non_integers(bad):
  with pytest.raises(InputError, match="seeds="):
    seed_list(bad)


def test_generate_prompts_equals_generate_seeds_per_prompt(model):
  prompts = [PROMPT, [9, 3, 3, 70, 12, 5, 1]]  # one length: one call for 2 prompts x 3 seeds
  many = sweep.generate_prompts(model, prompts, 10, memory=CFG, seeds=[4, 0, 2],
                                temperature=1.0)
  assert len(many) == 2 and all(isinstance(run, SeedRuns) for run in many)
  for prompt, run in zip(prompts, many):
    one = sweep.generate_seeds(model, prompt, 10, memory=CFG, seeds=[4, 0, 2], temperature=1.0)
    assert run.tokens == one.tokens and run.prompt_tokens == prompt
    assert run.seeds == one.seeds == [4, 0, 2]
    for name, want in _state_leaves(one.states).items():
      np.testing.assert_allclose(_state_leaves(run.states)[name], want, atol=STATE_TOL, rtol=0,
                                 err_msg=name)
  assert many[0].tokens != many[1].tokens


def test_one_new_token_is_the_prefills(model):
  """max_new_tokens=1: no decode step; every seed's token is the one generate samples, and
  its trace row is generate's (the rest of the 128-token buffer stays zero)."""
  batched = sweep.generate_seeds(model, PROMPT, 1, memory=CFG, seeds=[0, 1, 2],
                                 temperature=1.0)
  assert batched.trace.hidden.shape == (3, 128, model.config.width)
  for i in range(3):
    one = generate(model, PROMPT, 1, memory=CFG, seed=i, temperature=1.0, trace=True)
    assert batched.tokens[i] == one.tokens and len(one.tokens) == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i, :1], b, atol=STATE_TOL, rtol=0),
                 batched.trace, one.trace)
    assert np.abs(batched.trace.hidden[i, 0]).max() > 0
    assert not np.asarray(batched.trace.hidden[i, 1:]).any()


def test_phases_over_written_slots_equal_one_loop():
  """A sweep's decode reads only the slots written so far, in phases of 128, 256, ... slots:
  a run across two phase bounds (7 + 300 tokens in 512 slots) equals generate's one loop."""
  assert read_bounds(512) == [128, 256, 512] and read_bounds(128) == [128]
  assert read_bounds(512, above=130) == [256, 512] and read_bounds(4096, above=3000) == [4096]
  model = random_model(0, **{**TINY, "max_len": 512})
  batched = sweep.generate_seeds(model, PROMPT, 300, memory=CFG, seeds=[0, 1], temperature=1.0)
  for i in range(2):
    one = generate(model, PROMPT, 300, memory=CFG, seed=i, temperature=1.0)
    assert len(one.tokens) == 300 and batched.tokens[i] == one.tokens
    for name, want in _state_leaves(one.state).items():
      np.testing.assert_allclose(_state_leaves(batched.states)[name][i], want, atol=STATE_TOL,
                                 rtol=0, err_msg=name)


@flax.struct.dataclass
class LoudState:
  feedback: jax.Array  # [D]
  step: jax.Array  # []


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoudStart(Memory):
  """A memory whose fresh state already feeds back (a random vector per seed): not silent."""

  kind = "loud-start-test"

  def fresh_state(self, model_config, key, prompt_attn_TxD=None):
    return LoudState(feedback=jax.random.normal(key, (model_config.width,)),
                     step=jnp.zeros((), jnp.int32))

  def observe(self, state, obs, params):
    return state.replace(step=state.step + 1), Info(feedback_norm=jnp.linalg.norm(
        state.feedback))


def test_a_silent_start_equals_the_two_pass_prefill(model):
  """Seeds sharing the prompt pass, each memory started from that pass, equal the prefill
  for a memory not declared silent: per seed a baseline pass for its fresh state, then the
  prompt pass with that state's (zero) feedback."""
  two_pass = type("TwoPass", (type(CFG),), {"starts_silent": False})
  twin = two_pass(**{f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG)})
  assert Engine(model.config, CFG).silent_start and not Engine(model.config, twin).silent_start
  shared = sweep.generate_seeds(model, PROMPT, 8, memory=CFG, seeds=[0, 1, 2], temperature=1.0)
  apart = sweep.generate_seeds(model, PROMPT, 8, memory=twin, seeds=[0, 1, 2], temperature=1.0)
  assert shared.tokens == apart.tokens
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=STATE_TOL, rtol=0),
               (shared.trace, _state_leaves(shared.states)),
               (apart.trace, _state_leaves(apart.states)))


def test_subclasses_that_change_the_fresh_state_are_not_taken_as_silent():
  overriding = type("Overriding", (type(CFG),), {"fresh_state": type(CFG).fresh_state})
  declared = type("Declared", (type(CFG),), {"feedback": type(CFG).feedback,
                                             "starts_silent": True})
  plain = type("Plain", (type(CFG),), {"__doc__": "inherits everything"})
  assert (overriding.starts_silent, declared.starts_silent, plain.starts_silent) == (
      False, True, True)


@pytest.mark.parametrize("memory", [CFG, LoudStart(layer=1)], ids=["silent", "loud"])
def test_shared_prompt_rows_equal_separate_runs(model, memory):
  """Seeds sharing a prompt share its pass only when a fresh state adds nothing to it: a
  silent start's prompt pass has no feedback; a loud start's prompt pass gets each seed's."""
  assert Engine(model.config, memory).silent_start == (memory is CFG)
  try:
    batched = sweep.generate_seeds(model, PROMPT, 6, memory=memory, seeds=[0, 1, 2],
                                   temperature=1.0)
    for i in range(3):
      one = generate(model, PROMPT, 6, memory=memory, seed=i, temperature=1.0, trace=True)
      assert batched.tokens[i] == one.tokens
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i, :6], b, atol=STATE_TOL, rtol=0),
                   batched.trace, one.trace)
    prompt_ratio = batched.trace.feedback_ratio[:, 0]
    assert (prompt_ratio == 0).all() if memory is CFG else (prompt_ratio > 0.1).all()
  finally:
    KINDS.pop("loud-start-test", None)


def test_generate_prompts_refuses_no_prompts(model):
  with pytest.raises(InputError, match="non-empty list"):
    sweep.generate_prompts(model, [], 4, memory=CFG, seeds=2)
