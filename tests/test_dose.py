"""The dose-response study (experiments/dose.py): its arms and tables on made-up numbers."""

import json

import numpy as np
import pytest

from experiments import dose
from experiments import dose_positive
from experiments.report import study


def _table(policy: str, diffs: dict, planned_sd=None):
  """off at 0 and each arm at its difference plus the same noise, over 30 clusters."""
  noise = np.random.default_rng(0).normal(0.0, 0.01, 30)
  arms = {"off": {"values": {"nll": np.zeros(30).tolist()}, "memory": None}}
  for name, d in diffs.items():
    arms[name] = {"values": {"nll": (d + noise).tolist()}, "memory": {"kind": name}}
  return {"policy": policy, "arms": arms,
          **({} if planned_sd is None else {"planned_sd": {"nll": planned_sd}})}


def test_old_policy_holm_over_the_table_and_first_harm():
  result = _table("old", {"seed/open/0.1": 0.0, "seed/open/0.3": 0.02, "seed/open/1.0": 0.05,
                          "seed/closed/1.0": -0.05, "control:average/open/0.3": 0.02,
                          "positive:cache": -0.1})
  dose.finalize(result, {"nll": 1.0})
  arms = result["arms"]
  test = arms["seed/open/0.3"]["vs_off"]["nll"]
  assert test["p_holm"] > test["p_value"]  # Holm over the table's six arms
  assert test["mde_sd"] == "observed" and test["mde_alpha"] == pytest.approx(0.05)  # old MDE
  assert arms["seed/open/0.3"]["vs_average"]["nll"]["mean_diff"] == 0.0  # nominal control
  assert "p_holm" not in arms["seed/open/0.3"]["vs_average"]["nll"]
  assert result["first_detectable_harm"]["nll"] == {
      "control:average/open": 0.3, "seed/closed": None, "seed/open": 0.3}


def test_new_policy_pairs_each_preset_with_its_own_sized_control():
  result = _table("new", {"seed/open/0.3": 0.02, "gated/open/0.3": 0.03,
                          "control:average(seed)/open/0.3": 0.02,
                          "control:average(gated)/open/0.3": 0.0, "positive:cache": -0.1},
                  planned_sd=0.05)
  dose.finalize(result, {"nll": 1.0})
  arms = result["arms"]
  seed, gated = arms["seed/open/0.3"]["vs_average"]["nll"], arms["gated/open/0.3"]["vs_average"]["nll"]
  assert seed["mean_diff"] == 0.0 and gated["mean_diff"] == pytest.approx(0.03)
  for test in (seed, gated, arms["seed/open/0.3"]["vs_off"]["nll"]):
    assert test["mde_sd"] == "planned" and "p_holm" in test
  assert seed["mde_alpha"] == pytest.approx(0.05 / 2)  # its family: the two vs_average tests
  assert arms["seed/open/0.3"]["vs_off"]["nll"]["mde_alpha"] == pytest.approx(0.05 / 5)
  assert dose.family("control:average(seed)/open/0.3") == "control:average"


def test_every_arm_is_named_and_sized_as_its_policy_says():
  old, new = dose.grid((0.1,), dose.LOOPS, "old"), dose.grid((0.1,), dose.LOOPS, "new")
  assert len(old) == 2 * (3 + 3) + 1 + len(dose.RELATED)
  assert len(new) == 2 * 3 + len(dose.RELATED)  # controls follow their preset's realised size
  for name, memory in old.items():
    if name.count("/") == 2:
      _, loop, ratio = name.split("/")
      assert memory.loop == loop and memory.feedback_ratio == float(ratio)


def test_reproduction_compares_only_arms_of_the_same_memory(tmp_path):
  mine = _table("old", {"seed/open/0.1": 0.01, "positive:cache": -0.1})
  dose.finalize(mine, {"nll": 1.0})
  theirs = json.loads(json.dumps(mine))
  theirs["arms"]["seed/open/0.1"]["values"]["nll"][3] += 0.25
  theirs["arms"]["positive:cache"]["memory"] = {"kind": "another cache"}
  path = tmp_path / "theirs.json"
  path.write_text(json.dumps(theirs))
  out = dose.reproduction(mine, path)["arms"]
  assert set(out) == {"off", "seed/open/0.1"}
  assert out["off"]["max_abs_diff"]["nll"] == 0.0
  assert out["seed/open/0.1"]["max_abs_diff"]["nll"] == pytest.approx(0.25)


def _test(mean, p):
  return {"mean_diff": mean, "t_ci95": [mean - 0.01, mean + 0.01], "p_value": p, "mde": 0.01}


def _positive(kv_gain_p):
  """A made-up dose_positive result: kv's winner gains with p-value `kv_gain_p`, ppl's harms."""
  kv = {"best": {"theta": 2.0, "lam": 0.1, "gold_logprob": _test(0.3, 0.001)},
        "clusters": {"calibration": 384, "evaluation": 384},
        "evaluation": {"gold_logprob": _test(0.2, kv_gain_p), "accuracy": _test(0.01, 0.5)},
        "preset_on_evaluation": {"gold_logprob": _test(-0.05, 0.01)}}
  ppl = {"best": {"theta": 8.0, "lam": 0.02, "nll": _test(0.01, 0.01)},
         "clusters": {"calibration": 36, "evaluation": 36},
         "evaluation": {"nll": _test(0.02, 0.001)}, "preset_on_evaluation": {"nll": _test(0.03, 0.0)}}
  result = {"model": "m", "thetas": [2.0], "lams": [0.1], "window": 256, "git_commit": "abc1234",
            "tasks": {"kv": kv, "ppl": ppl}}
  dose_positive.add_holm(result["tasks"])
  return result


def test_positive_control_holm_and_verdict():
  result = _positive(0.001)
  assert result["tasks"]["kv"]["evaluation"]["gold_logprob"]["p_holm"] == pytest.approx(0.003)
  assert result["tasks"]["kv"]["evaluation"]["accuracy"]["p_holm"] == pytest.approx(0.5)
  text = study.positive_control(result)
  assert "a detectable gain in kv gold_logprob." in text  # ppl's detectable change is a harm
  assert "no detectable gain" in study.positive_control(_positive(0.2))


def _kv_arm(gold, accuracy, vs_average=None):
  arm = {"vs_off": {"gold_logprob": gold, "accuracy": accuracy}}
  if vs_average is not None:
    arm["vs_average"] = {"gold_logprob": vs_average}
  return arm


def test_kv_limits_separate_logprob_gains_from_recall():
  flat = dict(_test(0.0, 0.9), p_holm=1.0, sd=0.1)
  gain = dict(_test(0.1, 0.001), p_holm=0.01, sd=0.1)
  study_ = {"model": "m", "arms": {
      "off": {"summary": {"accuracy": 0.6}},
      "seed/open/0.03": _kv_arm(gain, flat, vs_average=_test(-0.05, 0.2)),
      "gated/open/0.03": _kv_arm(gain, flat, vs_average=_test(0.05, 0.001)),
      "seed/open/1.0": _kv_arm(flat, dict(flat, sd=0.0)),
      "control:average/open/0.03": _kv_arm(gain, gain)}}
  text = study._kv_limits(study_)
  assert "2 of 3 attractor arms raise the gold answer's log-probability" in text
  assert "1 of them by more than the moving average of x of the same size (gated/open/0.03)" in text
  assert "0 raise accuracy detectably" in text  # the control's accuracy gain is not counted
  headroom = study._headroom(study_)
  assert "accuracy MDE 1.0 to 1.0 points" in headroom  # sd 0: left out
  assert headroom.endswith("the accuracy MDE of 2 of 3 attractor arms is at most the seed's "
                           "+3.3 points (gated/open/0.03, seed/open/0.03)")


def test_versus_tuned_cache_names_the_layers_best_arm():
  study_ = {"task": "kv", "arms": {
      "seed/open/0.03": _kv_arm(dict(_test(0.1, 0.001), p_holm=0.01), _test(0.0, 0.9)),
      "seed/open/1.0": _kv_arm(dict(_test(-2.0, 0.001), p_holm=0.01), _test(0.0, 0.9))}}
  text = study._versus_tuned_cache(study_, _positive(0.001))
  assert "by **+0.2000 [+0.1900, +0.2100]**" in text  # the tuned cache, Holm p < 0.05
  assert "the layer's best arm, seed/open/0.03, by **+0.1000" in text
  assert study._versus_tuned_cache(study_, {}) == ""


def test_calibration_says_when_every_setting_searched_hurt():
  rows = lambda *diffs: {"search": [{"mean_diff": d} for d in diffs]}
  assert "Every setting searched raised the NLL" in study._all_harm(rows(0.0004, 0.01))
  assert study._all_harm(rows(0.0004, -0.0002)) == ""  # one setting gained: no such sentence


def test_header_names_each_commit_its_arms_ran_at():
  arm = lambda commit=None: {} if commit is None else {"git_commit": commit}
  one = {"git_commit": "f" * 40, "arms": {"off": arm("a" * 40), "seed/open/0.1": arm("a" * 40)}}
  assert study._commits(one) == "git aaaaaaa"
  mixed = {"git_commit": "f" * 40, "arms": {"off": arm("a" * 40), "x": arm("b" * 40),
                                           "y": arm("b" * 40), "z": arm()}}
  assert study._commits(mixed) == "arms at git aaaaaaa (1), bbbbbbb (2) and 1 unstamped"
  old = {"git_commit": "f" * 40, "arms": {"off": arm()}}
  assert study._commits(old) == "git fffffff (the file's last run; its arms are not stamped)"


def test_recall_rows_count_the_arms_that_moved_carried_recall():
  moved = dict(_test(-0.2, 0.001), p_holm=0.01, mde=0.15)
  flat = dict(_test(0.0, 0.9), p_holm=1.0, mde=0.1)
  arm = lambda test, gate=None: {"vs_off": {"carried_accuracy": test},
                                 "activity": {} if gate is None else {"gate_open": gate}}
  gen = {"task": "generation", "model": "m", "tokens": 256, "clusters": 32,
         "first_detectable_harm": {}, "arms": {
             "off": {"summary": {"carried_accuracy": 0.59375}},
             "seed/open/0.1": arm(moved), "gated/open/0.1": arm(flat, 0.93),
             "control:average/open/0.1": arm(moved), "positive:cache": arm(moved)}}
  row, = study.recall_rows({"dose_generation_m": gen})
  assert row.startswith("fact recall after 256 generated tokens, the memory carried into the "
                        "question (m, 32 prompts): off 59.4%; 1 of 2 attractor arms change it "
                        "detectably (Holm): seed/open/0.1 **-20.0 [")
  assert row.endswith("; gated's gate open on 93% of passes")
  gen["arms"]["gated/closed/0.3"] = arm(flat, 0.99)
  assert study.recall_rows({"dose_generation_m": gen})[0].endswith(" open on 93-99% of passes")
  gen["arms"]["seed/open/0.1"] = arm(flat)
  assert "0 of 3 attractor arms change it detectably (Holm) (MDE 10.0 to 10.0 points)" in (
      study.recall_rows({"dose_generation_m": gen})[0])


def test_recommendation_keeps_tasks_that_moved_arms_or_showed_the_cache():
  moved, flat = dict(_test(0.1, 0.001), p_holm=0.01), dict(_test(0.0, 0.9), p_holm=1.0)
  study_ = lambda task, model, *tests: {"task": task, "model": model, "clusters": 32, "arms": {
      "off": {}, **{f"seed/open/{i}": {"vs_off": {study.TASKS[task][0]: t}}
                    for i, t in enumerate(tests)},
      "control:random/open/1": {"vs_off": {study.TASKS[task][0]: moved}}}}  # not counted
  found = [study_("ppl", "m", moved, moved, flat), study_("kv", "m", flat, flat),
           study_("generation", "m", flat, moved, flat)]
  text = study._recommendation(found, {"dose_positive_m": {
      "git_commit": "x", "tasks": {"kv": {"evaluation": {"gold_logprob": moved}}}}})
  assert "ppl 2 of 3 on m; kv 0 of 2 on m; generation 1 of 3 on m" in text
  assert "The minimal suite these figures support: ppl, kv (a task" in text
  assert "read token by token over >= 32 clusters" in text
  assert text.endswith("; generation moved too few arms at its cluster count to add to it.")
  recall = {"seq_rep_4": flat, "carried_accuracy": moved}  # repetition flat, recall moved
  found[2]["arms"].update({"seed/closed/0": {"vs_off": recall},
                           "gated/closed/0": {"vs_off": recall}})
  text = study._recommendation(found, {})
  assert "generation 3 of 5 on m" in text and "support: ppl, generation (a task" in text


def test_calibration_resumes_only_rows_of_its_own_design_and_grid(tmp_path):
  from experiments.dose_calibrate import finished_rows
  from attractor_jax.writing import write_json_atomic
  grid = [(0.01, 0.3, 0), (0.01, 0.3, 16), (0.01, 0.6, 0)]
  row = lambda r, t, b: {"feedback_ratio": r, "theta_gate": t, "burn_in_steps": b}
  partial, design = tmp_path / "cal.partial.json", {"model": "m", "per_novel": 12}
  assert finished_rows(partial, design, grid) == []  # nothing yet
  write_json_atomic(partial, {**design, "search": [row(*grid[0]), row(*grid[1])]})
  assert len(finished_rows(partial, design, grid)) == 2
  assert finished_rows(partial, {**design, "per_novel": 4}, grid) == []  # other windows
  assert finished_rows(partial, design, grid[1:]) == []  # another grid
  write_json_atomic(partial, {"model": "m", "search": [row(*grid[0])]})  # before the design
  assert finished_rows(partial, design, grid) == []
