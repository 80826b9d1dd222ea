"""The study's instrument: feedback relative to the residual stream, the closed loop, the
equal-norm controls, teacher-forced rows read token by token, and the cluster statistics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import attractor_jax as aj
from attractor_jax import attractor as att
from attractor_jax import decoding, forcing, stats
from attractor_jax.forcing import token_nll
from attractor_jax.errors import InputError
from attractor_jax.attractor import gate_open
from attractor_jax.memories.base import residual_norm
from attractor_jax.transformer import init_cache
from tiny_models import random_model

MODEL = random_model(3, scale=0.3, vocab_size=61, width=32, num_heads=4, head_dim=8,
                     num_layers=3, mlp_width=48)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 61, (3, 24)), jnp.int32)
GATED = dataclasses.replace(aj.presets["gated"], layer=1, burn_in_steps=8, theta_gate=0.0)


def _state(memory, rows=3, prompt_len=4):
  engine = MODEL.engine(memory)
  keys = jax.random.split(jax.random.key(1), rows)
  return engine.fresh_states(MODEL.params, keys, TOKENS[:rows, :prompt_len])


def _with_feedback(state, scale):
  """The state with a random feedback of norm `scale` per row."""
  fb = jax.random.normal(jax.random.key(7), state.feedback.shape)
  return state.replace(feedback=scale * fb / jnp.linalg.norm(fb, axis=-1, keepdims=True))


# --- where the feedback enters ------------------------------------------------------------

@pytest.mark.parametrize("loop", ["open", "closed"])
def test_closed_loop_tap_depends_on_the_feedback_open_loop_does_not(loop):
  memory = aj.AttractorConfig(layer=1, loop=loop)
  engine = MODEL.engine(memory)
  state = _state(memory)
  taps = [engine.taps(MODEL.params, TOKENS, _with_feedback(state, s), layer=1).attn_out
          for s in (0.0, 1.0, 3.0)]
  changes = [float(jnp.abs(t - taps[0]).max()) for t in taps[1:]]
  if loop == "open":
    assert changes == [0.0, 0.0]  # the tap is computed before the feedback enters
  else:
    assert 1e-3 < changes[0] < changes[1]  # it grows with the feedback's size


def test_closed_loop_makes_the_state_depend_on_alpha_under_teacher_forcing():
  """Open loop: the attractor's vectors, fed by taps, ignore alpha; closed: they do not."""
  vectors = {}
  for loop in ("open", "closed"):
    for alpha in (0.0, 2.0):
      memory = aj.AttractorConfig(layer=1, loop=loop, alpha=alpha)
      state = _state(memory)
      for pos in range(TOKENS.shape[1]):
        out = MODEL.engine(memory).step(MODEL.params, TOKENS[:, pos:pos + 1],
                                        jnp.full((3, 1), pos), None, state)
        state = out.memory_state
      vectors[loop, alpha] = np.asarray(state.vectors)
  np.testing.assert_array_equal(vectors["open", 0.0], vectors["open", 2.0])
  assert np.abs(vectors["closed", 0.0] - vectors["closed", 2.0]).max() > 1e-4


def test_zero_feedback_closed_loop_is_the_plain_model():
  memory = aj.AttractorConfig(layer=1, loop="closed", alpha=0.0)
  state = _state(memory)
  logits = MODEL.engine(memory).taps(MODEL.params, TOKENS, state, layer=1).logits
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(MODEL.engine().forward(
      MODEL.params, TOKENS)))


# --- the feedback's size relative to the residual stream ------------------------------------

def test_feedback_ratio_update_matches_numpy():
  cfg = aj.AttractorConfig(num_attractors=4, feedback_ratio=0.3, timescales=(
      att.Timescale(eta=0.5, gamma=0.5), att.Timescale(eta=0.1, gamma=0.2)))
  rng = np.random.default_rng(2)
  st = att.init_state(cfg, MODEL.config, jax.random.key(0)).replace(
      strength=jnp.asarray(rng.uniform(0.2, 0.9, (2, 4)), jnp.float32))
  x = rng.standard_normal(32).astype(np.float32)
  residual = 7.5
  new, info = att.update(cfg, st, jnp.asarray(x), jnp.float32(residual))
  # the same update with alpha = 1 gives sum_n g_n m_n; the ratio mode rescales it by
  # ratio * |residual| / (N |x|)
  plain, _ = att.update(dataclasses.replace(cfg, feedback_ratio=None, alpha=1.0), st,
                        jnp.asarray(x))
  want = 0.3 * residual / (2 * np.linalg.norm(x)) * np.asarray(plain.feedback, np.float64)
  np.testing.assert_allclose(np.asarray(new.feedback), want, rtol=1e-5)
  mean = np.asarray(new.mean, np.float64)
  cos = want @ mean / (np.linalg.norm(want) * np.linalg.norm(mean))
  np.testing.assert_allclose(float(info.steering_cos), cos, rtol=1e-5)
  with pytest.raises(InputError, match="residual"):
    att.update(cfg, st, jnp.asarray(x))


def test_full_strength_attractor_on_x_gets_the_asked_ratio():
  """One attractor equal to x at strength 1, gate open: |feedback| = ratio * residual norm."""
  cfg = aj.AttractorConfig(num_attractors=1, feedback_ratio=0.05, beta=0.0,
                           timescales=(att.Timescale(eta=0.0, gamma=0.0, lam=0.0),))
  x = jnp.arange(1.0, 33.0)
  st = att.init_state(cfg, MODEL.config, jax.random.key(0)).replace(
      vectors=x[None, None], strength=jnp.ones((1, 1)))
  new, _ = att.update(cfg, st, x, jnp.float32(40.0))
  np.testing.assert_allclose(float(jnp.linalg.norm(new.feedback)), 0.05 * 40.0, rtol=1e-6)


def test_step_reports_the_realised_ratio():
  memory = aj.AttractorConfig(layer=1)
  state = _with_feedback(_state(memory), 0.8)
  out = MODEL.engine(memory).step(MODEL.params, TOKENS[:, :5], jnp.broadcast_to(
      jnp.arange(5), (3, 5)), None, state)
  r = np.asarray(out.taps.residual, np.float64)
  want = 0.8 / np.sqrt((r ** 2).sum(-1).mean(-1))
  np.testing.assert_allclose(np.asarray(out.feedback_ratio), want, rtol=1e-5)
  np.testing.assert_allclose(float(residual_norm(out.taps.residual[0])),
                             np.sqrt((r[0] ** 2).sum(-1).mean()), rtol=1e-6)


def test_generation_trace_carries_the_ratio():
  g = aj.generate(MODEL, [1, 2, 3], 6, memory=aj.AttractorConfig(layer=1, feedback_ratio=0.1),
                  trace=True)
  ratio = np.asarray(g.run.trace.feedback_ratio)[0, :len(g.tokens)]
  assert ratio[0] == 0.0 and np.all(ratio[2:] > 0.0)  # the prompt pass gets no feedback
  assert ratio.max() <= 0.1 + 1e-6  # a fraction of full strength, never more


# --- equal-norm controls --------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["prompt", "average", "random"])
def test_control_feedback_has_the_asked_size(direction):
  memory = aj.ControlConfig(layer=1, direction=direction, feedback_ratio=0.2)
  state = _state(memory)
  out = MODEL.engine(memory).step(MODEL.params, TOKENS[:, :1], jnp.zeros((3, 1), jnp.int32),
                                  None, state)
  r = np.asarray(out.taps.residual[:, 0], np.float64)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out.memory_state.feedback), axis=-1),
                             0.2 * np.linalg.norm(r, axis=-1), rtol=1e-5)
  fb = np.asarray(out.memory_state.feedback, np.float64)
  if direction == "prompt":  # the mean attention output of the row's first 4 tokens
    attn = np.asarray(MODEL.taps(TOKENS[:, :4], layer=1).attn_out, np.float64).mean(axis=1)
  elif direction == "average":  # rate * x after one pass from zero
    attn = np.asarray(out.taps.attn_out[:, -1], np.float64)
  else:
    attn = np.asarray(state.vector, np.float64)
  cos = (fb * attn).sum(-1) / (np.linalg.norm(fb, axis=-1) * np.linalg.norm(attn, axis=-1))
  np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


def test_control_refuses_bad_settings():
  with pytest.raises(InputError, match="direction"):
    aj.ControlConfig(direction="up")
  with pytest.raises(InputError, match="feedback_ratio"):
    aj.ControlConfig(feedback_ratio=-0.1)
  with pytest.raises(InputError, match="loop"):
    aj.AttractorConfig(loop="half")
  with pytest.raises(InputError, match="feedback_ratio"):
    aj.AttractorConfig(feedback_ratio=float("nan"))


# --- teacher-forced rows ----------------------------------------------------------------------

def _forced(memory, tokens=TOKENS, prompt_len=4, candidates=None):
  keys = jax.random.split(jax.random.key(1), tokens.shape[0])
  return forcing.teacher_forced(MODEL.engine(memory), MODEL.params, tokens, keys, candidates,
                                prompt_len=prompt_len)


def test_teacher_forced_without_memory_is_the_full_pass():
  candidates = jnp.asarray([3, 0, 41, 17])
  got = _forced(None, candidates=candidates)
  logits = MODEL.engine().forward(MODEL.params, TOKENS)
  want = token_nll(logits[:, :-1], TOKENS[:, 1:])
  np.testing.assert_allclose(np.asarray(got.nll), np.asarray(want), atol=2e-5, rtol=0)
  logp = jax.nn.log_softmax(logits, axis=-1)[..., candidates]
  np.testing.assert_allclose(np.asarray(got.candidate_logprob), np.asarray(logp), atol=2e-5,
                             rtol=1e-5)
  assert got.info is None and bool(np.all(got.finite))
  assert _forced(None).candidate_logprob is None


@pytest.mark.parametrize("loop", ["open", "closed"])
def test_teacher_forced_equals_a_token_by_token_loop(loop):
  memory = aj.AttractorConfig(layer=1, alpha=1.5, loop=loop)
  got = _forced(memory)
  engine, state = MODEL.engine(memory), _state(memory)
  cache = init_cache(MODEL.config, 3, TOKENS.shape[1])
  for pos in range(TOKENS.shape[1] - 1):
    out = engine.step(MODEL.params, TOKENS[:, pos:pos + 1], jnp.full((3, 1), pos), cache, state)
    cache, state = out.cache, out.memory_state
    np.testing.assert_allclose(np.asarray(got.nll[:, pos]), np.asarray(
        token_nll(out.logits[:, 0], TOKENS[:, pos + 1])), atol=2e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(got.feedback_ratio[:, pos]),
                               np.asarray(out.feedback_ratio), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got.info.gate[:, pos]), np.asarray(out.info.gate))


def test_gated_opens_and_differs_from_off_on_a_64_token_item():
  """Token by token the gate counts tokens: it opens inside one 64-token item."""
  tokens = jnp.asarray(np.random.default_rng(5).integers(0, 61, (2, 64)), jnp.int32)
  memory = dataclasses.replace(GATED, alpha=1.0)
  gated, off = _forced(memory, tokens), _forced(None, tokens)
  gate = np.asarray(gated.info.gate)[..., 0]  # [R, L]
  assert np.all(gate[:, :7] == 0.0)  # burn-in: updates 1-7 (step < burn_in_steps = 8)
  assert gate_open(gate[:, 7:]).mean() > 0.5  # then open on most passes
  diff = np.abs(np.asarray(gated.nll) - np.asarray(off.nll))
  assert diff[:, :8].max() < 2e-5 and diff[:, 10:].max() > 1e-3


def test_teacher_forced_zero_ratio_is_off():
  for memory in (dataclasses.replace(GATED, feedback_ratio=0.0, loop="closed"),
                 aj.ControlConfig(layer=1, feedback_ratio=0.0, direction="random")):
    np.testing.assert_array_equal(np.asarray(_forced(memory).nll),
                                  np.asarray(_forced(dataclasses.replace(memory, layer=1,
                                                                         loop="open")).nll))
    np.testing.assert_allclose(np.asarray(_forced(memory).nll), np.asarray(_forced(None).nll),
                               atol=2e-5, rtol=0)


# --- cluster statistics -------------------------------------------------------------------

def test_cluster_comparison_matches_scipy_and_its_mde_has_the_power():
  d = np.random.default_rng(0).normal(0.3, 1.0, 24)
  got = stats.cluster_comparison(d)
  t = scipy.stats.ttest_1samp(d, 0.0)
  assert got["clusters"] == 24 and got["p_value"] == pytest.approx(t.pvalue)
  assert got["t_ci95"] == pytest.approx(list(t.confidence_interval()))
  lo, hi = got["bca_ci95"]
  assert lo < d.mean() < hi
  # simulated power at the MDE is 80% (the same spread, 24 clusters)
  rng = np.random.default_rng(1)
  sims = rng.normal(got["mde"], d.std(ddof=1), (4000, 24))
  power = np.mean(scipy.stats.ttest_1samp(sims, 0.0, axis=1).pvalue < 0.05)
  assert power == pytest.approx(0.8, abs=0.03)
  assert stats.cluster_comparison(np.zeros(5))["p_value"] == 1.0
  with pytest.raises(InputError, match="3"):
    stats.cluster_comparison([0.1, 0.2])


def test_holm_adjusts_step_down():
  assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
  assert stats.holm([0.2]) == [0.2]
  assert stats.holm([0.6, 0.3]) == pytest.approx([0.6, 0.6])


# --- questions after a generation ---------------------------------------------------------

def _runs(memory, n=6):
  engine = MODEL.engine(memory)
  prompts = TOKENS[:2, :5]
  keys = jax.random.split(jax.random.key(2), 2)
  return engine, decoding.sample(engine, MODEL.params, prompts, keys, keys, jnp.int32(n),
                                 jnp.float32(0.0), jnp.float32(1.0), jnp.int32(-1), cache_len=32,
                                 buffer=n)


def test_extend_without_memory_is_the_full_pass():
  engine, runs = _runs(None)
  question = TOKENS[:2, 10:14]
  read_at = jnp.asarray([4, 2], jnp.int32)
  got = decoding.extend(engine, MODEL.params, runs, question, read_at)
  for row in range(2):
    seq = np.concatenate([np.asarray(TOKENS[row, :5]), np.asarray(runs.tokens[row]),
                          np.asarray(question[row])])
    logits = MODEL.engine().forward(MODEL.params, jnp.asarray(seq)[None])[0]
    # sequence index read_at is token 5 + 6 - 1 + read_at of the whole sequence
    want = jax.nn.log_softmax(logits[5 + 6 - 1 + int(read_at[row])])
    np.testing.assert_allclose(np.asarray(got[row]), np.asarray(want), atol=2e-5, rtol=0)


def test_extend_carries_the_memory():
  question, read_at = TOKENS[:2, 10:14], jnp.asarray([4, 4], jnp.int32)
  off = decoding.extend(
      _runs(None)[0], MODEL.params, _runs(None)[1], question, read_at)
  engine, runs = _runs(aj.AttractorConfig(layer=1, alpha=0.0))
  np.testing.assert_allclose(np.asarray(decoding.extend(engine, MODEL.params, runs, question, read_at)),
                             np.asarray(off), atol=2e-5, rtol=0)
  engine, runs = _runs(aj.AttractorConfig(layer=1, alpha=2.0))
  carried = decoding.extend(engine, MODEL.params, runs, question, read_at)
  fresh = decoding.extend(engine, MODEL.params, runs.replace(memory_state=jax.tree.map(
      jnp.zeros_like, runs.memory_state)), question, read_at)
  assert float(jnp.abs(carried - off).max()) > 1e-3
  assert float(jnp.abs(carried - fresh).max()) > 1e-3
