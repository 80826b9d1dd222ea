"""experiments.choice_task: each preset paired with off, with its MDE over cluster means and
Holm-adjusted p over the presets."""

import numpy as np

from attractor_jax import stats
from experiments.choice_task import compare_with_off


def test_compare_with_off_adds_cluster_mde_and_holm():
  rng = np.random.default_rng(0)
  off = {"accuracy": rng.random(40), "gold_logprob": rng.normal(size=40)}
  scores = {"off": off,
            "a": {m: v + 0.5 + rng.normal(scale=0.01, size=40) for m, v in off.items()},
            "b": {m: v + rng.normal(scale=0.3, size=40) for m, v in off.items()}}
  clusters = np.repeat(np.arange(10), 4)
  out = compare_with_off(scores, {"off": None, "a": 1.0, "b": 0.5}, ["a", "b"],
                         clusters=clusters)
  for metric in off:
    a, b = out["paired_vs_off"]["a"][metric], out["paired_vs_off"]["b"][metric]
    assert a["clusters"] == b["clusters"] == 10
    diffs = stats.cluster_means(scores["b"][metric] - off[metric], clusters)
    assert b["mde"] == stats.cluster_comparison(diffs)["mde"] > 0
    assert 0 < a["mde"] < b["mde"]  # a's shift barely varies: it would detect less
    assert a["p_holm"] == min(1.0, 2 * a["p_value"])  # the smaller p is doubled
    assert b["p_holm"] == max(a["p_holm"], b["p_value"])
  assert out["gate_open"]["b"] == 0.5 and set(out["summary"]) == {"off", "a", "b"}
