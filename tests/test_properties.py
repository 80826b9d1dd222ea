"""Properties of the attractor update over any valid AttractorConfig (hypothesis): strengths stay
in [0, 1], the state stays finite, alpha = 0 feeds back exactly zero; out-of-range knobs raise.

Updates run eagerly (every drawn config would otherwise be one more compilation), over two
attractor counts and one or two banks: each new shape costs a second of op compilation.
"""

import dataclasses
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from attractor_jax import attractor as att
from attractor_jax.attractor import AttractorConfig, Timescale
from attractor_jax.errors import InputError
from tiny_models import CONFIG as MC  # shapes only: width 16, 2 layers
STEPS = 12
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)  # the same examples in CI

unit = st.floats(0.0, 1.0)
cosine = st.floats(-1.0, 1.0)
configs = st.builds(
    AttractorConfig, layer=st.integers(0, 1), num_attractors=st.sampled_from([1, 4]),
    pool=st.sampled_from(["last", "mean"]), beta=st.floats(0.0, 1e4), theta_act=cosine,
    timescales=st.lists(st.builds(Timescale, eta=unit, gamma=unit, lam=unit), min_size=1,
                        max_size=2).map(tuple),
    decay=st.sampled_from(["unused", "all"]), eps_active=unit, reseed_dead=st.booleans(),
    s_dead=unit, dead_after=st.integers(0, 4), gate=st.sampled_from(["none", "similarity"]),
    theta_gate=cosine, tau_gate=st.floats(1e-6, 1e3), burn_in_steps=st.integers(0, 4),
    burn_in_strength=unit, alpha=st.floats(0.0, 1e3), init_noise=st.floats(0.0, 1e3),
    init_strength=unit, center=st.booleans())


def _inputs(seed: int):
  """STEPS inputs over eight orders of magnitude, about one in ten all zero."""
  rng = np.random.default_rng(seed)
  xs = rng.standard_normal((STEPS, MC.width)) * 10.0 ** rng.uniform(-4, 4, (STEPS, 1))
  return np.where(rng.random((STEPS, 1)) < 0.1, 0.0, xs).astype(np.float32)


def _run(cfg: AttractorConfig, seed: int):
  """The (state, info) after each of STEPS updates, from a fresh state."""
  state = att.init_state(cfg, MC, jax.random.key(seed))
  states = []
  for x in _inputs(seed):
    state, info = att.update(cfg, state, x)
    states.append((jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, info)))
  return states


@SETTINGS
@given(cfg=configs, seed=st.integers(0, 2**31 - 1))
def test_strength_stays_in_the_unit_interval_and_the_state_finite(cfg, seed):
  for i, (state, info) in enumerate(_run(cfg, seed), start=1):
    assert 0.0 <= state.strength.min() and state.strength.max() <= 1.0, i
    for name in ("vectors", "strength", "feedback", "mean", "sigma"):
      assert np.isfinite(getattr(state, name)).all(), (i, name)
    assert int(state.step) == i
    # The update's info reports the state it left.
    np.testing.assert_array_equal(info.strength, state.strength)
    np.testing.assert_allclose(info.feedback_norm, np.linalg.norm(state.feedback), rtol=1e-5,
                               atol=1e-15, err_msg=str(i))  # float32 squares underflow below
    assert np.all((0.0 <= info.gate) & (info.gate <= 1.0)), i
    assert info.gate.shape == info.max_sim.shape == (cfg.num_banks,)
    assert info.active.shape == state.strength.shape and info.active.dtype == bool


@SETTINGS
@given(cfg=configs, seed=st.integers(0, 2**31 - 1))
def test_alpha_zero_feeds_back_exactly_zero(cfg, seed):
  for state, info in _run(dataclasses.replace(cfg, alpha=0.0), seed):
    assert np.all(state.feedback == 0.0) and info.feedback_norm == 0.0


# Each bounded float knob with its range; any value outside it (or NaN / Inf) is refused.
RANGES = {"beta": (0.0, 1e4), "theta_act": (-1.0, 1.0), "eps_active": (0.0, 1.0),
          "s_dead": (0.0, 1.0), "theta_gate": (-1.0, 1.0), "tau_gate": (1e-6, 1e3),
          "burn_in_strength": (0.0, 1.0), "alpha": (0.0, 1e3), "init_noise": (0.0, 1e3),
          "init_strength": (0.0, 1.0)}


@st.composite
def out_of_range(draw):
  field = draw(st.sampled_from(sorted(RANGES)))
  lo, hi = RANGES[field]
  value = draw(st.one_of(st.floats(max_value=lo, exclude_max=True, allow_nan=False),
                         st.floats(min_value=hi, exclude_min=True, allow_nan=False),
                         st.just(math.nan)))
  return field, value


@settings(max_examples=100, deadline=None)
@given(case=out_of_range())
def test_out_of_range_knobs_are_refused(case):
  field, value = case
  with pytest.raises(InputError, match=field):
    AttractorConfig(**{field: value})


@SETTINGS
@given(cfg=configs)
def test_valid_configs_are_hashable_and_equal_to_their_copies(cfg):
  copy = dataclasses.replace(cfg)
  assert copy == cfg and hash(copy) == hash(cfg)
