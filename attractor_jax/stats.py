"""Paired statistics for comparing a treatment with a baseline on the same items and seeds.

Every comparison is reported as a mean difference with a percentile bootstrap CI (resampling
whole clusters, e.g. passages, when items share one) and a two-sided sign-flip permutation
p-value. Shape suffixes: N items, G clusters, B bootstrap draws, P sign patterns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attractor_jax.errors import InputError

_EXACT_MAX_N = 16  # up to 2**16 sign patterns are enumerated exactly
_BLOCK = 1 << 20  # elements per resampling block, to bound memory
_TIE_RTOL = 1e-9  # statistics equal up to float rounding count as ties (i.e. as extreme)


def _as_1d(name: str, x: Any) -> np.ndarray:
  x_N = np.asarray(x, dtype=np.float64)
  if x_N.ndim != 1 or x_N.size == 0:
    raise InputError(f"{name} must be a non-empty 1-D array, got shape {x_N.shape}")
  if not np.all(np.isfinite(x_N)):
    raise InputError(f"{name} contains non-finite values")
  return x_N


def _cluster_index(clusters: Any, n: int) -> np.ndarray:
  """Dense cluster index in [0, G) per item; each item is its own cluster if None."""
  if clusters is None:
    return np.arange(n)
  c_N = np.asarray(clusters)
  if c_N.shape != (n,):
    raise InputError(f"clusters has shape {c_N.shape} but values have length {n}")
  return np.unique(c_N, return_inverse=True)[1].reshape(n)


def bootstrap_ci(
    values: Any,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    clusters: Any = None,
) -> tuple[float, float]:
  """Percentile bootstrap CI of the mean, resampling whole clusters when given.

  A draw's mean is sum(values in the drawn clusters) / count(items in the drawn clusters).

  Args:
    values: [N] per-item values.
    n_boot: number of bootstrap draws.
    level: coverage of the interval, in (0, 1).
    seed: seed of the NumPy generator.
    clusters: optional [N] cluster id per item (e.g. passage id).

  Returns:
    (lo, hi) as Python floats.
  """
  x_N = _as_1d("values", values)
  if not 0.0 < level < 1.0:
    raise InputError(f"level={level} must be in (0, 1)")
  if n_boot < 1:
    raise InputError(f"n_boot={n_boot} must be >= 1")
  g_N = _cluster_index(clusters, x_N.size)
  sums_G = np.bincount(g_N, weights=x_N)
  counts_G = np.bincount(g_N).astype(np.float64)
  n_groups = sums_G.size
  rng = np.random.default_rng(seed)
  means_B = np.empty(n_boot)
  step = max(1, _BLOCK // n_groups)
  for start in range(0, n_boot, step):
    idx_BxG = rng.integers(0, n_groups, size=(min(step, n_boot - start), n_groups))
    means_B[start:start + len(idx_BxG)] = (
        sums_G[idx_BxG].sum(axis=1) / counts_G[idx_BxG].sum(axis=1))
  lo, hi = np.quantile(means_B, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)


def sign_flip_pvalue(
    diffs: Any, *, n_perm: int = 10_000, seed: int = 0, clusters: Any = None) -> float:
  """Two-sided sign-flip permutation p-value for H0: mean(diffs) == 0.

  p = share of sign patterns s with |sum_g s_g D_g| >= |sum_g D_g|, where D_g is the sum of
  the diffs in cluster g (each item its own cluster by default). With G <= 16 all 2**G
  patterns are enumerated; otherwise p = (1 + hits) / (1 + n_perm) over random patterns.

  Args:
    diffs: [N] paired differences (treatment - baseline).
    n_perm: number of random sign patterns when G > 16.
    seed: seed of the NumPy generator (Monte Carlo only).
    clusters: optional [N] cluster ids; a cluster's items flip together.

  Returns:
    The p-value as a Python float in (0, 1].
  """
  d_N = _as_1d("diffs", diffs)
  d_G = np.bincount(_cluster_index(clusters, d_N.size), weights=d_N)
  n_groups = d_G.size
  threshold = abs(d_G.sum()) - _TIE_RTOL * np.abs(d_G).sum()
  if n_groups <= _EXACT_MAX_N:
    bits_PxG = (np.arange(2**n_groups)[:, None] >> np.arange(n_groups)) & 1
    signs_PxG = 1.0 - 2.0 * bits_PxG
    return float(np.mean(np.abs(signs_PxG @ d_G) >= threshold))
  if n_perm < 1:
    raise InputError(f"n_perm={n_perm} must be >= 1")
  rng = np.random.default_rng(seed)
  hits = 0
  step = max(1, _BLOCK // n_groups)
  for start in range(0, n_perm, step):
    signs_PxG = rng.choice([-1.0, 1.0], size=(min(step, n_perm - start), n_groups))
    hits += int(np.sum(np.abs(signs_PxG @ d_G) >= threshold))
  return (hits + 1) / (n_perm + 1)


def summarize(values: Any, **kw: Any) -> dict[str, Any]:
  """n, mean, std (ddof=1; 0 when n == 1) and bootstrap ci95 of per-item values.

  Args:
    values: [N] per-item values.
    **kw: passed to `bootstrap_ci` (n_boot, seed, clusters).

  Returns:
    A JSON-serializable dict {"n", "mean", "std", "ci95": [lo, hi]}.
  """
  x_N = _as_1d("values", values)
  return {
      "n": int(x_N.size),
      "mean": float(x_N.mean()),
      "std": float(x_N.std(ddof=1)) if x_N.size > 1 else 0.0,
      "ci95": list(bootstrap_ci(x_N, **kw)),
  }


def paired(
    treatment: Any,
    baseline: Any,
    *,
    clusters: Any = None,
    n_boot: int = 10_000,
    n_perm: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
  """Paired comparison of diff = treatment - baseline per item.

  Args:
    treatment: [N] per-item scores of the treatment.
    baseline: [N] per-item scores of the baseline, same items in the same order.
    clusters: optional [N] cluster ids, used by both the CI and the p-value.
    n_boot: bootstrap draws for the CI.
    n_perm: random sign patterns for the p-value (when there are more than 16 clusters).
    seed: seed of both resampling procedures.

  Returns:
    A JSON-serializable dict {"n", "mean_diff", "ci95": [lo, hi], "p_value"}, plus
    "rel_pct" = 100 * mean_diff / mean(baseline) when mean(baseline) != 0.
  """
  t_N = _as_1d("treatment", treatment)
  b_N = _as_1d("baseline", baseline)
  if t_N.size != b_N.size:
    raise InputError(f"treatment has length {t_N.size} but baseline has length {b_N.size}")
  d_N = t_N - b_N
  out: dict[str, Any] = {
      "n": int(d_N.size),
      "mean_diff": float(d_N.mean()),
      "ci95": list(bootstrap_ci(d_N, n_boot=n_boot, seed=seed, clusters=clusters)),
      "p_value": sign_flip_pvalue(d_N, n_perm=n_perm, seed=seed, clusters=clusters),
  }
  baseline_mean = float(b_N.mean())
  if baseline_mean != 0.0:
    out["rel_pct"] = 100.0 * out["mean_diff"] / baseline_mean
  return out


def cluster_means(values: Any, clusters: Any) -> np.ndarray:
  """[G] the mean of `values` [N] within each cluster, clusters in order of first appearance."""
  x_N = _as_1d("values", values)
  _, first, index_N = np.unique(np.asarray(clusters), return_index=True, return_inverse=True)
  if index_N.size != x_N.size:
    raise InputError(f"clusters has length {index_N.size} but values has length {x_N.size}")
  means_G = np.bincount(index_N, weights=x_N) / np.bincount(index_N)
  return means_G[np.argsort(np.argsort(first))]


def cluster_comparison(diffs: Any, *, level: float = 0.95, power: float = 0.8,
                       seed: int = 0, planned_sd: float | None = None,
                       family_size: int = 1) -> dict[str, Any]:
  """A paired comparison over G independent clusters, one mean difference per cluster.

  Intervals valid at small G: a t interval and a BCa bootstrap interval (scipy.stats), the
  two-sided one-sample t-test p-value, and the minimum detectable effect: the smallest true
  mean difference G clusters detect with probability `power` (two-sided, noncentral t) at
  alpha = (1 - level) / family_size, the first step of Holm over a family of that size. The
  MDE uses `planned_sd` when given (the project's policy, docs/method.md "Statistics": a
  spread measured before the comparison, e.g. on the calibration split), else the observed
  one; "mde_sd" says which. A planned spread of 0 (nothing moved the metric when it was
  measured) sizes no effect: "mde" is None. G equal differences have no spread: p = 1 when
  they are 0, else the exact sign-flip p-value 2 / 2**G; no p-value is below that floor
  (a t-test's can underflow to 0).

  Args:
    diffs: [G] per-cluster differences (treatment - baseline), G >= 3.
  Returns:
    {"clusters", "mean_diff", "sd", "t_ci95", "bca_ci95", "p_value", "mde", "mde_sd",
     "mde_alpha"}.
  """
  import scipy.stats

  d_G = _as_1d("diffs", diffs)
  G = d_G.size
  if G < 3:
    raise InputError(f"{G} clusters: a cluster comparison needs at least 3")
  if family_size < 1:
    raise InputError(f"family_size={family_size} must be >= 1")
  mean, sd = float(d_G.mean()), float(d_G.std(ddof=1))
  alpha = (1 - level) / family_size
  mde_sd = sd if planned_sd is None else float(planned_sd)
  out: dict[str, Any] = {
      "clusters": int(G), "mean_diff": mean, "sd": sd,
      "mde": (minimum_detectable_effect(mde_sd, G, alpha, power) if mde_sd > 0
              else None if planned_sd is not None else 0.0),
      "mde_sd": "observed" if planned_sd is None else "planned", "mde_alpha": alpha}
  if sd <= _TIE_RTOL * abs(mean):  # every cluster moved by the same amount: no spread to test
    return {**out, "t_ci95": [mean, mean], "bca_ci95": [mean, mean],
            "p_value": 1.0 if mean == 0.0 else 2.0 / 2.0**G}
  test = scipy.stats.ttest_1samp(d_G, 0.0)
  t_ci = test.confidence_interval(level)
  boot = scipy.stats.bootstrap((d_G,), np.mean, confidence_level=level, method="BCa",
                               n_resamples=9999, rng=np.random.default_rng(seed))
  return {**out, "t_ci95": [float(t_ci.low), float(t_ci.high)],
          "bca_ci95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
          # a t-test p below the exact sign-flip floor (or underflowing to 0) claims more
          # than G clusters can show
          "p_value": max(float(test.pvalue), 2.0 / 2.0**G)}


def minimum_detectable_effect(sd: float, clusters: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
  """The mean difference a two-sided one-sample t-test over `clusters` values of spread `sd`
  detects with probability `power` at level `alpha` (exact, noncentral t)."""
  import scipy.optimize
  import scipy.stats

  df = clusters - 1
  crit = scipy.stats.t.ppf(1 - alpha / 2, df)
  # scipy's noncentral t gives NaN far in its tail, where the power is 1
  reach = lambda nc: np.nan_to_num(scipy.stats.nct.sf(crit, df, nc), nan=1.0) - power
  noncentrality = scipy.optimize.brentq(reach, 0.0, crit + 50.0)
  return float(noncentrality * sd / np.sqrt(clusters))


def detectable(test: dict[str, Any], alpha: float = 0.05) -> bool:
  """Whether a comparison's Holm-adjusted p-value (its "p_holm") is below `alpha`."""
  return test["p_holm"] < alpha


def holm(p_values: Any) -> list[float]:
  """Holm's step-down adjusted p-values (family-wise error), in the input's order."""
  p_M = _as_1d("p_values", p_values)
  order = np.argsort(p_M)
  scaled = np.minimum(1.0, (p_M.size - np.arange(p_M.size)) * p_M[order])
  adjusted = np.empty_like(p_M)
  adjusted[order] = np.maximum.accumulate(scaled)
  return adjusted.tolist()
