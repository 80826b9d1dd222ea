"""The dose-response experiments' scoring and tables, on made-up numbers."""

import types

import numpy as np
import pytest

from experiments import dose_response as dose


def test_kv_metrics_sum_each_choice_span():
  items = [types.SimpleNamespace(answer=1), types.SimpleNamespace(answer=0)]
  spans = [(3, 2)] * 8  # every choice's 2 tokens start at sequence position 3
  nll = np.full((8, 6), 9.0)
  nll[:, 2:4] = np.arange(8)[:, None] * 0.5  # row r: logp of its choice = -r
  got = dose.kv_metrics(nll, spans, items)  # two items x four choices = eight rows
  np.testing.assert_allclose(got["gold_logprob"], [-1.0, -4.0])
  np.testing.assert_array_equal(got["accuracy"], [0.0, 1.0])


def test_ppl_metric_averages_the_scored_tokens():
  nll = np.zeros((2, dose.PROMPT_LEN + dose.SCORED - 1))
  nll[:, dose.PROMPT_LEN - 1:] = [[1.0], [3.0]]
  np.testing.assert_allclose(dose.ppl_metrics(nll)["nll"], [1.0, 3.0])


def _table(diffs):
  arms = {"off": {"values": {"nll": [0.0] * 4}}}
  for name, d in diffs.items():
    arms[name] = {"vs_off": {"nll": {"mean_diff": d, "p_value": 0.001 if d else 0.9}}}
  return {"arms": arms}


def test_holm_and_first_harm():
  result = _table({"seed/open/0.1": 0.0, "seed/open/0.3": 0.02, "seed/open/1.0": 0.05,
                   "seed/closed/1.0": -0.05, "positive:cache": -0.1})
  dose.add_holm(result)
  assert result["arms"]["seed/open/0.3"]["vs_off"]["nll"]["p_holm"] == pytest.approx(0.005)  # 5 tests
  assert dose.first_harm(result, "nll", 1.0) == {"seed/closed": None, "seed/open": 0.3}


def test_every_arm_is_named_and_equal_in_size():
  arms = dose.arms((0.1,))
  assert len(arms) == 2 * (3 + 3) + 1 + len(dose.RELATED)
  for name, memory in arms.items():
    if name.count("/") == 2:
      family, loop, ratio = name.split("/")
      assert memory.loop == loop and memory.feedback_ratio == float(ratio)
