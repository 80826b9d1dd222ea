"""Paired statistics against known cases and hand computations."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor_jax import stats


def test_ci_of_a_constant_is_that_constant():
  assert stats.bootstrap_ci([2.5] * 10) == (2.5, 2.5)


def test_ci_of_standard_normal_contains_zero_with_textbook_width():
  n = 2000
  x = np.random.default_rng(1).standard_normal(n)
  lo, hi = stats.bootstrap_ci(x, n_boot=2000)
  assert lo < 0.0 < hi
  assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(n), rel=0.1)


def test_cluster_bootstrap_with_one_cluster_has_zero_width():
  x = np.random.default_rng(2).standard_normal(30)
  lo, hi = stats.bootstrap_ci(x, clusters=np.zeros(30, dtype=int), n_boot=200)
  assert lo == hi == pytest.approx(x.mean())


def test_cluster_bootstrap_is_wider_than_item_bootstrap_for_correlated_items():
  # 10 passages of 20 items each share a passage effect: items alone understate the spread.
  rng = np.random.default_rng(3)
  clusters = np.repeat(np.arange(10), 20)
  x = rng.standard_normal(10)[clusters] + 0.1 * rng.standard_normal(200)
  lo_i, hi_i = stats.bootstrap_ci(x, n_boot=1000)
  lo_c, hi_c = stats.bootstrap_ci(x, n_boot=1000, clusters=clusters)
  assert hi_c - lo_c > 2 * (hi_i - lo_i)


def test_exact_sign_flip_all_positive():
  # Only the all-plus and all-minus patterns of 2**5 = 32 reach |sum| = 5: p = 2/32.
  assert stats.sign_flip_pvalue([1, 1, 1, 1, 1]) == 2 / 32


def test_sign_flip_of_symmetric_diffs_is_one():
  # The observed sum is 0, so every pattern is at least as extreme.
  assert stats.sign_flip_pvalue([1, -1, 2, -2, 3, -3]) == 1.0
  assert stats.sign_flip_pvalue(np.tile([0.5, -0.5], 20), n_perm=500) == 1.0


def test_monte_carlo_sign_flip_of_a_clear_shift_is_near_its_floor():
  # 40 positive diffs: no random pattern of 2**40 is expected to match; floor = 1 / 1001.
  p = stats.sign_flip_pvalue(np.ones(40), n_perm=1000, seed=7)
  assert p == 1 / 1001
  assert stats.sign_flip_pvalue(np.ones(40), n_perm=1000, seed=7) == p


def test_sign_flip_with_one_cluster_is_one():
  # Both patterns of a single cluster (+D, -D) reach |D|.
  assert stats.sign_flip_pvalue([1.0, 2.0, 3.0], clusters=[4, 4, 4]) == 1.0


def test_summarize():
  out = stats.summarize([1.0, 2.0, 3.0, 4.0], n_boot=200)
  assert out["n"] == 4
  assert out["mean"] == 2.5
  # Squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; ddof=1 -> sqrt(5 / 3).
  assert out["std"] == pytest.approx(math.sqrt(5 / 3))
  assert 1.0 <= out["ci95"][0] <= 2.5 <= out["ci95"][1] <= 4.0
  json.dumps(out)
  assert stats.summarize([3.0], n_boot=10) == {"n": 1, "mean": 3.0, "std": 0.0, "ci95": [3.0, 3.0]}


def test_paired_matches_hand_computation():
  treatment = [3.0, 5.0, 4.0, 6.0]
  baseline = [2.0, 4.0, 4.0, 4.0]
  out = stats.paired(treatment, baseline, n_boot=500)
  # diffs = [1, 1, 0, 2], mean 1.0; baseline mean 3.5 -> rel = 100 * 1 / 3.5.
  assert out["n"] == 4
  assert out["mean_diff"] == 1.0
  assert out["rel_pct"] == pytest.approx(100 / 3.5)
  # |sum| = 4 only when the three nonzero diffs share a sign: 2 * 2 (the 0's sign) of 16.
  assert out["p_value"] == 4 / 16
  assert out["ci95"] == list(stats.bootstrap_ci([1.0, 1.0, 0.0, 2.0], n_boot=500))
  assert 0.0 <= out["ci95"][0] <= 1.0 <= out["ci95"][1] <= 2.0
  json.dumps(out)


def test_paired_omits_rel_pct_for_zero_baseline_mean():
  out = stats.paired([1.0, 0.0], [1.0, -1.0], n_boot=50)
  assert "rel_pct" not in out


def test_paired_uses_clusters():
  out = stats.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], clusters=[0, 0, 0], n_boot=50)
  assert out["ci95"] == [2.0, 2.0]
  assert out["p_value"] == 1.0


def test_invalid_inputs_name_the_lengths():
  with pytest.raises(ValueError, match="length 4 but baseline has length 3"):
    stats.paired([1, 2, 3, 4], [1, 2, 3])
  with pytest.raises(ValueError, match=r"\(0,\)"):
    stats.summarize([])
  with pytest.raises(ValueError, match=r"\(0,\)"):
    stats.sign_flip_pvalue([])
  with pytest.raises(ValueError, match=r"shape \(2,\) but values have length 3"):
    stats.bootstrap_ci([1, 2, 3], clusters=[0, 1])
  with pytest.raises(ValueError, match="non-finite"):
    stats.bootstrap_ci([1.0, float("nan")])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40))
def test_ci_lies_within_the_data_and_p_is_a_probability(xs):
  lo, hi = stats.bootstrap_ci(xs, n_boot=100)
  slack = 1e-9 * (1 + max(abs(x) for x in xs))
  assert min(xs) - slack <= lo <= hi <= max(xs) + slack
  assert 0.0 < stats.sign_flip_pvalue(xs, n_perm=100) <= 1.0


def test_cluster_means_average_within_clusters_in_first_seen_order():
  means = stats.cluster_means([1.0, 2.0, 3.0, 4.0, 5.0], [7, 3, 7, 3, 9])
  np.testing.assert_allclose(means, [2.0, 3.0, 5.0])
  with pytest.raises(stats.InputError, match="clusters has length 2"):
    stats.cluster_means([1.0, 2.0, 3.0], [0, 1])


def test_equal_cluster_differences_never_give_p_zero():
  got = stats.cluster_comparison(np.full(24, 0.3))
  assert got["p_value"] == 2.0 / 2.0**24 > 0.0
  assert stats.cluster_comparison(np.zeros(24))["p_value"] == 1.0
  nearly_equal = 0.05 + 1e-5 * np.random.default_rng(0).standard_normal(384)  # t ~ 1e4
  assert stats.cluster_comparison(nearly_equal)["p_value"] == 2.0 / 2.0**384 > 0.0


def test_the_mde_uses_the_planned_sd_at_alpha_over_the_family():
  d = np.random.default_rng(0).normal(0.1, 0.01, 24)  # a tiny observed spread
  got = stats.cluster_comparison(d, planned_sd=0.5, family_size=5)
  assert got["mde_sd"] == "planned" and got["mde_alpha"] == pytest.approx(0.01)
  assert got["mde"] == pytest.approx(stats.minimum_detectable_effect(0.5, 24, 0.01))
  assert got["mde"] > stats.cluster_comparison(d)["mde"] * 10
  assert stats.cluster_comparison(d, planned_sd=0.0)["mde"] is None  # nothing to size it by
