"""The headline experiment (experiments/headline.py): its arms and tables on made-up numbers."""

import json

import numpy as np
import pytest

from experiments import headline

METRICS = ("carried_accuracy", "carried_gold_logprob", "seq_rep_4", "distinct_2", "drift")


def _result(shifts: dict, sizes: dict, clusters=32):
  """off right on 3 of 4 clusters; each arm's accuracy shifted by shifts[arm] (plus noise) and
  its produced (or, for controls, imposed) ratio sizes[arm]."""
  rng = np.random.default_rng(0)
  off = np.tile([1.0, 1.0, 1.0, 0.0], clusters // 4)
  arms = {"off": {"values": {m: off.tolist() for m in METRICS}, "activity": {}, "seconds": 1.0}}
  for name, shift in shifts.items():
    values = {m: (off + shift + rng.normal(0, 0.05, clusters)).tolist() for m in METRICS}
    arm = {"values": values, "activity": {"produced_ratio_mean": sizes[name]}, "seconds": 2.0}
    if name.startswith("control"):
      arm["imposed_ratio"] = [sizes[name]] * clusters
    arms[name] = arm
  return {"model": "m", "clusters": clusters, "sizes": [clusters, 512], "arms": arms}


def test_holm_families_relative_change_and_first_harm():
  result = _result({"seed": 0.0, "control:average(seed)": 0.0, "seed/0.3": -0.3,
                    "control:average(seed/0.3)": -0.3, "seed/1.0": -0.6},
                   {"seed": 0.008, "control:average(seed)": 0.008, "seed/0.3": 0.12,
                    "control:average(seed/0.3)": 0.12, "seed/1.0": 0.4})
  headline.finalize(result)
  arms = result["arms"]
  assert result["headroom"] == {"off_accuracy": 0.75, "in_60_90": True}
  assert result["arm_seconds"] == 1.0 + 5 * 2.0  # every arm's own time, over resumes
  off_test = arms["seed/0.3"]["vs_off"]["carried_accuracy"]
  assert off_test["mde_alpha"] == pytest.approx(0.05 / 5) and off_test["p_holm"] < 0.05
  control_test = arms["seed/0.3"]["vs_control"]["carried_accuracy"]
  assert control_test["mde_alpha"] == pytest.approx(0.05 / 2)  # seed and 0.3: 1.0 has no control
  assert abs(control_test["mean_diff"]) < 0.05 and "vs_control" not in arms["seed/1.0"]
  assert result["relative_accuracy_change"]["seed/0.3"] == pytest.approx(-0.4, abs=0.03)
  harm = result["first_detectable_harm"]["carried_accuracy"]
  assert harm == {"seed": 0.12, "control:average": 0.12}
  assert result["first_detectable_harm"]["seq_rep_4"] == {"seed": None, "control:average": None}


def test_summary_and_plot_read_every_model_file(tmp_path):
  result = _result({"seed": -0.1, "control:average(seed)": -0.1}, {"seed": 0.01,
                                                                   "control:average(seed)": 0.01})
  headline.finalize(result)
  path = tmp_path / "headline_m.json"
  path.write_text(json.dumps(result))
  summary = headline.summarize([path])
  row = summary["models"]["m"]["arms"]["seed"]
  assert row["realised_ratio"] == 0.01 and set(row) >= {"vs_off:carried_accuracy",
                                                         "vs_control:carried_accuracy"}
  headline.plot(summary, tmp_path / "scaling.png")
  assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_each_arm_is_the_seed_preset_closed_loop():
  for arm in headline.ARMS:
    memory = headline.memory(arm)
    assert memory.loop == "closed" and memory.alpha == 0.1
  assert headline.memory("seed/K256").num_attractors == 256
  assert headline.memory("seed/0.3").feedback_ratio == 0.3 and headline.memory("seed").feedback_ratio is None


def test_report_section_and_claim_row_come_from_the_summary(tmp_path):
  from experiments.report.scaling import scaling_rows, scaling_section

  result = _result({"seed/0.3": -0.3, "control:average(seed/0.3)": -0.1},
                   {"seed/0.3": 0.12, "control:average(seed/0.3)": 0.12})
  headline.finalize(result)
  path = tmp_path / "headline_m.json"
  path.write_text(json.dumps(result))
  res = {"headline_scaling": headline.summarize([path])}
  [row] = scaling_rows(res)
  assert "largest relative drop -4" in row and "(seed/0.3, feedback 12.0% of the residual)" in row
  assert "against its sized control **-2" in row  # -0.3 vs -0.1: 20 points, bold
  text = "\n".join(scaling_section(res))
  assert "| m | 75% | seed/0.3 | 12.00% | **-3" in text
  assert "harmed detectably by the seed from 12.0% of the residual" in text
  assert scaling_section({}) == [] and scaling_rows({}) == []
