"""Generation: the jitted loop against a Python loop of `Engine.step`, compile counts, seed
vmaps, prompts of different lengths, sampling, input errors and resume, on a tiny random
llama (the default model's greedy parity with transformers: tests/test_loading.py).
"""

import collections
import contextlib
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import attractor, checkpoint, sampling
from attractor_jax.engine import Engine
from attractor_jax.errors import InputError
from attractor_jax.generation import generate, resume
from attractor_jax.layers import dense
from attractor_jax.presets import presets
from attractor_jax.prompts import cache_length
from attractor_jax.seed_sweep import generate_seeds
from attractor_jax.seeds import seed_keys
from attractor_jax.transformer import init_cache

from tiny_models import random_model

# A random 2-layer llama (NumPy draws: no compile): weights N(0, 0.1^2), norm scales 1 + noise.
TINY = dict(vocab_size=97, width=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_width=48,
            max_len=256, tie_embeddings=False, scale=0.1)
SEED1 = dataclasses.replace(presets["seed"], layer=1)  # the seed preset, hosted on a tiny model
PROMPT = [5, 17, 42, 3, 88, 61, 9, 30]
# Tests 4 and 5 share one shape (this prompt, 40 tokens: 256 cache slots), so one compile.
LONG = (PROMPT * 13)[:100]


@pytest.fixture(scope="module")
def tiny():
  return random_model(**TINY)


# ---- a reference: generation as a plain Python loop of one-pass calls ----

@functools.partial(jax.jit, static_argnames=("engine",))
def _pass(engine: Engine, params, tokens, positions, cache, state):
  """One pass: `Engine.step` with a memory; without one, the bare decoder (no memory code)."""
  if engine.memory is None:
    logits, cache = engine.decoder.apply({"params": params}, tokens, positions, cache)
    return logits, cache, state
  out = engine.step(params, tokens, positions, cache, state)
  return out.logits, out.cache, out.memory_state


_sample = jax.jit(sampling.sample_token)


def _loop(model, prompt, n, memory, *, seed=0, temperature=0.0, top_p=1.0):
  """n passes (prompt, then one per token) as generate makes them, one jitted pass each.

  Returns (tokens, logits [n, V] of each pass's last position, final state or None, cache).
  """
  init_key, sample_key = seed_keys(seed)
  engine = model.engine(memory)
  tokens = jnp.asarray(prompt, jnp.int32)[None]
  positions = jnp.arange(len(prompt), dtype=jnp.int32)[None]
  cache, state = init_cache(model.config, 1, cache_length(model, len(prompt), n)), None
  if memory is not None:  # prefill's fresh memory, from the prompt's host-layer attention
    attn_TxD = model.taps(tokens, memory=memory).attn_out[0]
    state = jax.tree.map(lambda a: a[None], attractor.init_state(memory, model.config, init_key,
                                                                 attn_TxD))
  out, rows = [], []
  for t in range(n):
    logits, cache, state = _pass(engine, model.params, tokens, positions, cache, state)
    row = logits[0, -1]
    token = _sample(row, jax.random.fold_in(sample_key, t), jnp.float32(temperature),
                    jnp.float32(top_p))
    out.append(int(token))
    rows.append(np.asarray(row))
    tokens = jnp.full((1, 1), token, jnp.int32)
    positions = jnp.full((1, 1), len(prompt) + t, jnp.int32)
  final = None if state is None else jax.tree.map(lambda a: a[0], state)
  return out, np.stack(rows), final, cache


def _assert_trees_close(a, b, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol,
                                                       rtol=0), a, b)


@contextlib.contextmanager
def _compilations():
  """Counts XLA compilations by function name ("jit(decode)") while the block runs."""
  compiled = collections.Counter()

  def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiled[kwargs.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield compiled
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


# ---- 2. no memory, alpha = 0 and burn-in leave the baseline untouched ----

def test_no_memory_is_exactly_the_plain_decoder(tiny):
  """memory=None (preset off) runs the bare decoder: the same tokens and final hidden states
  as a loop of plain decoder passes, and no memory anywhere in the result."""
  g = generate(tiny, LONG, 40, memory=None, trace=True)
  tokens, logits, state, cache = _loop(tiny, LONG, 40, None)
  assert state is None
  assert g.tokens == tokens and len(tokens) == 40
  traced = np.asarray(dense(jnp.asarray(g.trace.hidden), tiny.params["lm_head"]))
  np.testing.assert_allclose(traced, logits, atol=1e-5, rtol=0)
  _assert_trees_close(g.run.cache, cache)
  assert g.memory is None and g.state is None and g.run.memory_state is None
  assert g.trace.info is None  # no memory: no update info; the logits are checked finite
  assert g.trace.finite.shape == (len(g.tokens),) and g.trace.finite.all()
  assert g.summary() is None and g.to_json()["memory"] is None


def test_alpha_zero_is_the_baseline(tiny):
  base_tokens, base_logits, _, _ = _loop(tiny, PROMPT, 64, None)
  tokens, logits, state, _ = _loop(tiny, PROMPT, 64, aj.AttractorConfig(alpha=0.0, layer=1))
  assert tokens == base_tokens
  np.testing.assert_allclose(logits, base_logits, atol=1e-6, rtol=0)
  assert int(state.step) == 64 and float(np.asarray(state.strength).max()) > 0  # it did learn


def test_burn_in_tokens_are_the_baseline_then_feedback_acts(tiny):
  """Burn-in counts tokens: the prompt pass (update 1) reads the 8 prompt tokens and each
  decode pass one more, so a burn-in of 13 tokens shuts updates 1-5 and opens update 6."""
  opens = 6
  cfg = aj.AttractorConfig(alpha=5.0, layer=1, gate="none",
                           burn_in_steps=len(PROMPT) + opens - 1)
  _, base_logits, _, _ = _loop(tiny, PROMPT, opens + 4, None)
  _, logits, state, _ = _loop(tiny, PROMPT, opens + 4, cfg)
  # Pass p adds the feedback of update p (p = 0: the prompt pass, which adds none).
  np.testing.assert_allclose(logits[:opens], base_logits[:opens], atol=1e-6, rtol=0)
  assert np.abs(logits[opens] - base_logits[opens]).max() > 1e-3
  assert int(state.tokens) == len(PROMPT) + opens + 3  # every token read, the prompt's included


# ---- 3. one compilation per phase ----

def test_generation_compiles_once(tiny):
  """A 100-token run compiles prefill and decode once each; a second same-shaped run
  (other seed, temperature, prompt) compiles nothing."""
  cfg = dataclasses.replace(SEED1, num_attractors=5)  # used by no other test: a fresh compile
  with _compilations() as compiled:
    first = generate(tiny, PROMPT, 100, memory=cfg)
    first_counts = dict(compiled)
    compiled.clear()
    second = generate(tiny, PROMPT[::-1], 100, memory=cfg, seed=7, temperature=0.9, top_p=0.8)
  assert len(first.tokens) == len(second.tokens) == 100
  assert first_counts["jit(prefill)"] == 1 and first_counts["jit(decode)"] == 1, first_counts
  assert not compiled, dict(compiled)


def test_one_more_token_compiles_no_new_decode_loop_and_extends_the_run(tiny):
  """100 then 101 new tokens (same prompt, same memory): the token count is an argument of
  the decode loop, not its shape (both fit one 128-token buffer), so the loop compiles once;
  greedy, the 100 tokens are the first 100 of the 101."""
  cfg = dataclasses.replace(SEED1, num_attractors=3)  # used by no other test: a fresh compile
  with _compilations() as compiled:
    hundred = generate(tiny, PROMPT, 100, memory=cfg)
    after_first = dict(compiled)
    more = generate(tiny, PROMPT, 101, memory=cfg)
  assert after_first["jit(prefill)"] == 1 and after_first["jit(decode)"] == 1, after_first
  assert compiled["jit(prefill)"] == 1 and compiled["jit(decode)"] == 1, dict(compiled)
  assert len(hundred.tokens) == 100 and len(more.tokens) == 101
  assert more.tokens[:100] == hundred.tokens
  assert int(hundred.state.step) == 100 and int(more.state.step) == 101  # one update per pass
  assert len(set(more.tokens)) > 1  # not a constant run, where any prefix would match


# ---- 4. the jitted loop is a loop of `Engine.step` calls ----

def test_jitted_generation_equals_python_loop_of_step(tiny):
  g = generate(tiny, LONG, 40, memory=SEED1, trace=True)
  tokens, logits, state, cache = _loop(tiny, LONG, 40, SEED1)
  assert g.memory == SEED1
  assert g.tokens == tokens
  traced = np.asarray(dense(jnp.asarray(g.trace.hidden), tiny.params["lm_head"]))
  np.testing.assert_allclose(traced, logits, atol=1e-5, rtol=0)
  assert g.tokens == np.argmax(traced, axis=-1).tolist()  # temperature 0 is argmax
  _assert_trees_close(g.state, state)
  assert int(g.state.step) == 40
  # The trace keeps the memory's update info of every pass: the last is the final state's.
  assert g.trace.info.strength.shape == (40, *g.state.strength.shape)
  np.testing.assert_allclose(g.trace.info.strength[-1], g.state.strength, atol=1e-6, rtol=0)
  np.testing.assert_allclose(g.trace.info.feedback_norm[-1], np.linalg.norm(g.state.feedback),
                             rtol=1e-5)
  assert g.trace.info.gate.shape == g.trace.info.max_sim.shape == (40, SEED1.num_banks)
  assert g.trace.finite.shape == (40,) and g.trace.finite.all()
  _assert_trees_close(g.run.cache, cache)
  assert g.run.position.shape == g.run.token.shape == (1,)  # one row
  assert int(g.run.position[0]) == len(LONG) + 39 and int(g.run.token[0]) == g.tokens[-1]


# ---- 5. a vmap over seeds is a loop over seeds ----

def test_vmapped_seeds_equal_a_loop_over_seeds(tiny):
  seeds = [0, 1, 2, 3]
  swept = generate_seeds(tiny, LONG, 40, memory=SEED1, seeds=seeds, temperature=1.0)
  assert isinstance(swept, aj.SeedRuns) and swept.seeds == seeds and swept.memory == SEED1
  for i, s in enumerate(seeds):
    g = generate(tiny, LONG, 40, memory=SEED1, seed=s, temperature=1.0, trace=True)
    assert swept.tokens[i] == g.tokens, s
    _assert_trees_close(jax.tree.map(lambda a: a[i], swept.states), g.state)
    n = len(g.tokens)  # trace rows past a seed's count are zeros
    _assert_trees_close(jax.tree.map(lambda a: a[i, :n], swept.trace), g.trace)
    assert not np.asarray(swept.trace.hidden[i, n:]).any()
  assert len({tuple(t) for t in swept.tokens}) > 1  # the seeds do sample differently


def test_prompts_of_different_lengths_batch_exactly(tiny):
  """Left-aligned in one decode loop, each prompt's rows give the tokens, final memory state
  and trace they give run alone: the padding before a short prompt is never read."""
  prompts, memory = [PROMPT[:3], LONG], SEED1
  batched = aj.generate_prompts(tiny, prompts, 24, memory=memory, seeds=[0, 5], temperature=1.0)
  for prompt, runs in zip(prompts, batched):
    alone = generate_seeds(tiny, prompt, 24, memory=memory, seeds=[0, 5], temperature=1.0)
    assert runs.tokens == alone.tokens and runs.prompt_tokens == list(prompt)
    _assert_trees_close(runs.states, alone.states)
    _assert_trees_close(runs.trace, alone.trace)


# ---- 6. sampling and input errors ----

def test_sample_token_temperature_zero_is_argmax_and_tiny_top_p_keeps_the_top():
  logits_SxV = jax.random.normal(jax.random.key(0), (16, 97)) * 3.0
  keys = jax.random.split(jax.random.key(1), 16)
  top = np.argmax(np.asarray(logits_SxV), axis=-1)
  sample = jax.vmap(sampling.sample_token, in_axes=(0, 0, None, None))
  np.testing.assert_array_equal(sample(logits_SxV, keys, 0.0, 1.0), top)
  for temperature in (1.0, 5.0):
    np.testing.assert_array_equal(sample(logits_SxV, keys, temperature, 1e-6), top)
  flat = jnp.broadcast_to(logits_SxV[0], (16, 97))  # one row, 16 keys: a real sampler varies
  assert len(set(np.asarray(sample(flat, keys, 5.0, 1.0)).tolist())) > 1


def test_draw_lands_on_each_index_in_proportion_to_its_weight():
  """Uniforms on a regular grid land on each index as often as its share of the weight (to
  rounding), across blocks and a padded last block; a zero weight is never drawn, not even at
  the ends of [0, 1)."""
  weights_V = np.array(jax.random.uniform(jax.random.key(3), (700,)), np.float32)
  weights_V[::3] = 0.0
  weights_V[600:] = 0.0  # the last weighted index is 599, inside the padded third block
  n = 200_000
  draw = jax.jit(jax.vmap(sampling.draw, in_axes=(None, 0)))
  drawn = np.asarray(draw(weights_V, (np.arange(n) + 0.5) / n))
  counts = np.bincount(drawn, minlength=700)
  np.testing.assert_allclose(counts, n * weights_V / weights_V.sum(), atol=2.0)
  assert not counts[weights_V == 0].any()
  ends = np.asarray(draw(weights_V, np.array([0.0, np.nextafter(1.0, 0.0)], np.float32)))
  np.testing.assert_array_equal(ends, [1, 599])


def test_first_max_is_argmax():
  """Greedy's first_max is jnp.argmax: random rows, ties (the first index), all -inf; a NaN
  row gives an index in range (the NaN guard rejects the pass)."""
  rows = np.array(jax.random.normal(jax.random.key(5), (16, 1000)))
  rows[3, [10, 500, 999]] = 9.0  # a three-way tie for the maximum
  rows[4] = -np.inf
  rows[5, :2] = np.inf
  np.testing.assert_array_equal(jax.vmap(sampling.first_max)(rows), np.argmax(rows, axis=1))
  assert int(sampling.first_max(rows[3])) == 10
  nan_row = rows[0].copy()
  nan_row[7] = np.nan
  assert 0 <= int(sampling.first_max(nan_row)) < 1000


@pytest.mark.parametrize("candidates", [16, 4096])  # most rows' nuclei outside / all inside
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95, 0.999, 1.0])
def test_nucleus_equals_the_sorted_prefix(top_p, candidates):
  """The bisection keeps exactly the smallest most-probable prefix reaching top_p (a sort),
  whether the nucleus lies among the candidates or not; tied tokens go together."""
  probs_RxV = np.array(jax.nn.softmax(jax.random.normal(jax.random.key(2), (8, 4096)) * 4.0))
  probs_RxV[7] = np.where(np.arange(4096) % 41 == 0, 0.01, 0.0)  # 100 tied tokens, 0.01 each
  probs_RxV[7, -3:] = 1e-4
  nucleus = lambda probs_V: sampling.nucleus(probs_V, top_p, candidates)
  kept_RxV = np.asarray(jax.vmap(nucleus)(probs_RxV))
  for probs_V, kept_V in zip(probs_RxV.astype(np.float64), kept_RxV):
    order = np.argsort(-probs_V, kind="stable")
    before = np.cumsum(probs_V[order]) - probs_V[order]  # mass ranked above each token
    want = np.zeros_like(kept_V)
    want[order] = (before < top_p) | (top_p >= 1.0)
    ties = probs_V == probs_V[order][np.flatnonzero(want[order])[-1]]  # with the last kept
    want |= ties
    np.testing.assert_array_equal(kept_V, want)


@pytest.mark.parametrize("kwargs,named", [
    (dict(max_new_tokens=0), "max_new_tokens=0"),
    (dict(max_new_tokens=2.5), "max_new_tokens=2.5"),
    (dict(max_new_tokens=True), "max_new_tokens=True"),
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(temperature=math.nan), "temperature=nan"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(seed=-1), "seed=-1"),
    (dict(seed=1.5), "seed=1.5"),
])
def test_bad_sampling_arguments_raise_naming_the_value(tiny, kwargs, named):
  with pytest.raises(InputError, match=named.replace(".", r"\.")):
    generate(tiny, PROMPT, **{"max_new_tokens": 4, **kwargs})


def test_prompt_beyond_the_context_raises(tiny):
  with pytest.raises(InputError, match="exceeds the model's context 256"):
    generate(tiny, [1] * 200, 57)
  with pytest.raises(InputError, match="exceeds the model's context 256"):
    generate(tiny, [1] * 257, 1)


@pytest.mark.parametrize("prompt", ["", "  \n", []])
def test_empty_prompt_raises(tiny, prompt):
  with pytest.raises(InputError):
    generate(tiny, prompt, 4)


# ---- 7. resume ----

def test_resume_equals_one_call(tiny, tmp_path):
  """20 tokens fit 256 cache slots (8 prompt + a 128-token buffer, rounded up); resuming for
  130 more needs 27 + 256 slots, so the cache grows to 384 (a 512-token context)."""
  model = random_model(**{**TINY, "max_len": 512})  # llama params do not depend on max_len
  prompt = PROMPT
  first = generate(model, prompt, 20, memory=SEED1, seed=3, temperature=0.8)
  checkpoint.save_run(tmp_path / "run", first, model)
  restored = checkpoint.restore_run(tmp_path / "run", SEED1, model)
  assert restored.memory == SEED1
  second = resume(model, restored.state, 130, memory=SEED1, temperature=0.8)
  whole = generate(model, prompt, 150, memory=SEED1, seed=3, temperature=0.8)
  assert second.prompt_tokens == prompt + first.tokens
  assert len(first.tokens) == 20 and len(second.tokens) == 130
  assert first.tokens + second.tokens == whole.tokens
  _assert_trees_close(second.state, whole.state)
  assert first.run.cache.max_len == 256 and second.run.cache.max_len == 384
  assert int(second.run.position[0]) == int(whole.run.position[0]) == len(prompt) + 149
