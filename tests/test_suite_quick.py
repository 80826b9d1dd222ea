"""The --quick suite runs end to end: every result JSON has its schema and finite metrics."""

import json
import math
import subprocess
import sys

from conftest import child_env, needs_smollm2
from test_bench import check_bench_schema


def _finite_numbers(tree, path=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _finite_numbers(v, f"{path}.{k}")
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      yield from _finite_numbers(v, f"{path}[{i}]")
  elif isinstance(tree, float):
    yield path, tree


@needs_smollm2
def test_quick_suite_writes_finite_results(tmp_path):
  subprocess.run([sys.executable, "-m", "experiments.run_all", "--quick", "--out", str(tmp_path)],
                 env=child_env(), check=True, timeout=900)
  expected = {"e3_generation", "e4_comprehension", "suite_recall", "e5_sweeps",
              "e6_topics", "e1_ppl_seed", "bench", "trajectories"}
  results = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
  assert expected <= set(results)
  for name in ("e3_generation", "e4_comprehension", "e5_sweeps", "e6_topics"):
    r = results[name]
    assert {"experiment", "claim", "model", "seeds", "git_commit", "machine", "wall_s"} <= set(r)
  for name in ("e3_generation", "e4_comprehension", "e6_topics"):
    assert results[name]["paired_vs_off"], name
  parts = expected - {"e1_ppl_seed", "trajectories"} | {"e1_perplexity"}  # E3 writes trajectories
  assert set(results["run_all"]["experiment_wall_s"]) == parts
  for task in ("cloze",):
    paired = results["suite_recall"][task]["paired_vs_off"]
    assert {"accuracy", "gold_logprob"} <= set(paired["seed"]), task
  assert {"ppl", "baseline_ppl", "delta_pct", "delta_pct_ci95", "machine", "wall_s"} <= set(
      results["e1_ppl_seed"])
  skip = ("drift", "bench")  # drift is NaN for continuations shorter than a window
  for name, r in results.items():
    for path, value in _finite_numbers(r):
      if name != "bench" and not any(s in path for s in skip):
        assert math.isfinite(value), f"{name}{path} = {value}"
  check_bench_schema(results["bench"], tmp_path)
  report = (tmp_path / "RESULTS.md").read_text()
  for row in ("| E1 |", "| E2 |", "| E3 |", "| E4 |", "| E5 |", "| E6 |", "| Suite |"):
    assert row in report and "not yet measured" not in report.split(row)[1].split("\n")[0]
