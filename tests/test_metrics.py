"""Continuation metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from attractor_jax.evals import metrics

CYCLE = [1, 2, 3, 1, 2, 3, 1, 2, 3]


def test_seq_rep_n():
  # 4-grams: 1231 2312 3123 1231 2312 3123 -> 6 total, 3 unique -> 1 - 3/6.
  assert metrics.seq_rep_n(CYCLE, n=4) == 0.5
  # 2-grams: 12 23 31 12 23 31 12 23 -> 8 total, 3 unique -> 1 - 3/8.
  assert metrics.seq_rep_n(CYCLE, n=2) == 0.625
  # [7] * 6 has 3 4-grams, all 7777 -> 1 - 1/3.
  assert metrics.seq_rep_n([7] * 6) == pytest.approx(2 / 3)
  assert metrics.seq_rep_n(list(range(9))) == 0.0
  assert metrics.seq_rep_n([1, 2, 3], n=4) == 0.0
  assert metrics.seq_rep_n(np.array([5, 5, 5, 5])) == 0.0  # one 4-gram: 1 - 1/1


def test_distinct_n():
  # 2-grams as above: 3 unique / 8 total; unigrams: 3 unique / 9 total.
  assert metrics.distinct_n(CYCLE, 2) == 3 / 8
  assert metrics.distinct_n(CYCLE, 1) == 3 / 9
  assert metrics.distinct_n([1, 2], 3) == 0.0


def test_rep_l():
  # Positions 1..8 (8 of them); tokens at 3..8 recur at distance 3, tokens 1, 2 are new.
  assert metrics.rep_l(CYCLE) == 6 / 8
  assert metrics.rep_l(CYCLE, l=3) == 6 / 8
  assert metrics.rep_l(CYCLE, l=2) == 0.0  # distance 3 is outside a window of 2
  # [1, 2, 1, 3, 2], l=2: i=2 (1 in [1, 2]) hits; i=4 (2 in [1, 3]) misses -> 1/4.
  assert metrics.rep_l([1, 2, 1, 3, 2], l=2) == 1 / 4
  # l=3: i=4 sees [2, 1, 3] and hits too -> 2/4.
  assert metrics.rep_l([1, 2, 1, 3, 2], l=3) == 2 / 4
  assert metrics.rep_l([5, 5, 5]) == 1.0
  assert metrics.rep_l([5]) == 0.0


def _hidden():
  # Window means (window=2): [1, 0], [0.5, 0.5], [0, 3]; the trailing row is dropped.
  return np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 2], [0, 4], [9, 9]], dtype=np.float32)


def test_window_drift():
  drift = metrics.window_drift(_hidden(), [1.0, 0.0], window=2)
  # cos([1, 0], e1) = 1; cos([.5, .5], e1) = .5 / (sqrt(.5) * 1) = 1/sqrt(2); cos([0, 3], e1) = 0.
  np.testing.assert_allclose(drift, [1.0, 1 / math.sqrt(2), 0.0], atol=1e-12)
  assert metrics.window_drift(_hidden(), [1.0, 0.0], window=8).shape == (0,)


def test_snap_back_share():
  # Closer to A = e1: window 0 yes (1 > 0), window 1 a tie (counts as B), window 2 no -> 1/3.
  assert metrics.snap_back_share(_hidden(), [1, 0], [0, 1], window=2) == pytest.approx(1 / 3)
  assert metrics.snap_back_share(_hidden(), [0, 1], [1, 0], window=2) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="window=8"):
    metrics.snap_back_share(_hidden(), [1, 0], [0, 1], window=8)


def test_repetition_by_position():
  tokens = [1, 1, 1, 1, 1, 2, 3, 4, 5]
  # window 0 = [1, 1, 1, 1]: 2-grams 11 11 11 -> 1 - 1/3; window 1 = [1, 2, 3, 4]: all
  # distinct -> 0; the trailing [5] is dropped.
  np.testing.assert_allclose(
      metrics.repetition_by_position(tokens, n=2, window=4), [2 / 3, 0.0])


def test_accepts_jax_arrays():
  jnp = pytest.importorskip("jax.numpy")
  assert metrics.seq_rep_n(jnp.asarray(CYCLE)) == 0.5
  assert metrics.rep_l(jnp.asarray(CYCLE)) == 6 / 8
  drift = metrics.window_drift(jnp.asarray(_hidden()), jnp.asarray([1.0, 0.0]), window=2)
  np.testing.assert_allclose(drift, [1.0, 1 / math.sqrt(2), 0.0], atol=1e-6)


def test_invalid_inputs():
  with pytest.raises(ValueError, match="1-D"):
    metrics.seq_rep_n([[1, 2], [3, 4]])
  with pytest.raises(ValueError, match="n=0"):
    metrics.distinct_n([1, 2], 0)
  with pytest.raises(ValueError, match="hidden width is 2"):
    metrics.window_drift(_hidden(), [1.0, 0.0, 0.0], window=2)
  with pytest.raises(ValueError, match=r"\[T, D\]"):
    metrics.window_drift(np.zeros(4), [1.0], window=2)
