"""The positive control, calibrated: the continuous cache tuned on one split, tested on another.

    python -m experiments.dose_positive [--model gemma3-270m] [--quick]
        ->  results/dose_positive_<model>.json

The cache at its preset (tuned on 4,096-token contexts) is the study's positive control; in
128-token windows it hurts. Can the suite see a working memory at all? Search (stated before
the run): `CacheConfig(window=WINDOW)` at every theta in THETAS and lam in LAMS, on each task's
calibration split (kv: as many items as the evaluation's, drawn with KV_SEEDS["calibration"]; ppl:
windows of the calibration novels); the winner (best mean change of the task's main metric)
then runs on the evaluation split of experiments/dose.py's task (kv items of
KV_SEEDS["evaluation"]; windows of the evaluation novels), paired with off, and so does the
preset. The splits and scores are the suite's tasks as experiments/dose.py configures them.
Both figures side by side: the winner's curse, measured.
Resumable: finished search rows are kept in the JSON and skipped on rerun.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib

import jax
import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic
from attractor_jax.suite.clusters import KV_PAIRS, KV_PROMPT_LEN, KV_SEEDS, NOVELS
from attractor_jax.suite.tasks import PROMPT_LEN
from experiments.dose import LOADED_COMMIT, TASKS

THETAS = (2.0, 8.0, 32.0)
LAMS = (0.02, 0.1, 0.3, 0.6)
WINDOW = 256  # longer than every row: the cache sees the whole row


def add_holm(tasks: dict):
  """Holm-adjusted p-values over the winners' evaluation tests (every task and metric)."""
  tests = [t["evaluation"][m] for t in tasks.values() for m in t["evaluation"]]
  for test, adjusted in zip(tests, stats.holm([t["p_value"] for t in tests])):
    test["p_holm"] = adjusted


def calibrate(model, task_name: str, size: str, done: list, save) -> dict:
  """The search on the calibration split, then the winner and the preset on evaluation."""
  task = TASKS[task_name]
  metric, sign = task.metric, (1.0 if task.higher_is_better else -1.0)
  score = lambda rows, memory: task.score(model, memory, rows).values
  compare = lambda values, off: {m: stats.cluster_comparison(values[m] - off[m]) for m in off}
  calibration = task.rows(model, "calibration", size)
  off = score(calibration, None)
  for theta, lam in list(itertools.product(THETAS, LAMS))[len(done):]:
    memory = aj.CacheConfig(theta=theta, lam=lam, window=WINDOW)
    name = f"cache theta {theta} lam {lam}"
    done.append({"theta": theta, "lam": lam, "git_commit": LOADED_COMMIT,
                 **compare(score(calibration, memory), off)})
    print(task_name, theta, lam, f"{done[-1][metric]['mean_diff']:+.5f}", flush=True)
    save()
  best = max(done, key=lambda r: sign * r[metric]["mean_diff"])
  evaluation = task.rows(model, "evaluation", size)
  eval_off = score(evaluation, None)
  winner = aj.CacheConfig(theta=best["theta"], lam=best["lam"], window=WINDOW)
  return {"search": done, "best": best, "memory": winner.to_dict(), "git_commit": LOADED_COMMIT,
          "clusters": {"calibration": task.clusters(calibration),
                       "evaluation": task.clusters(evaluation)},
          "off": {"calibration": {m: float(v.mean()) for m, v in off.items()},
                  "evaluation": {m: float(v.mean()) for m, v in eval_off.items()}},
          "evaluation": compare(score(evaluation, winner), eval_off),
          "preset_on_evaluation": compare(score(evaluation, aj.presets["cache"]), eval_off)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--quick", action="store_true", help="tiny splits: a smoke run")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or f"results/dose_positive_{args.model}.json")
  model = aj.load(args.model)
  size = "quick" if args.quick else "full"
  sizes = {task: {"calibration": TASKS[task].sizes[size] if task == "kv" else
                  TASKS[task].sizes[size][0]} for task in ("kv", "ppl")}
  sizes = {task: {**s, "evaluation": s["calibration"]} for task, s in sizes.items()}
  design = {"model": args.model, "sizes": sizes, "thetas": list(THETAS), "lams": list(LAMS),
            "window": WINDOW, "kv_pairs": KV_PAIRS, "kv_prompt_len": KV_PROMPT_LEN,
            "kv_seeds": [KV_SEEDS["calibration"], KV_SEEDS["evaluation"]],
            "prompt_len": PROMPT_LEN,
            "novels": [NOVELS["calibration"], NOVELS["evaluation"]]}
  result = {"experiment": "dose-positive", **json.loads(json.dumps(design)), "tasks": {}}
  if out.exists():  # resume: keep the finished search rows of the same design
    old = json.loads(out.read_text())
    if any(old.get(k) != result[k] for k in design):
      parser.error(f"{out} holds another design (or a --quick run): pass --out for this one, "
                   "or move that file away")
    result["tasks"] = old["tasks"]
  save = lambda: write_json_atomic(out, result)
  for task in ("kv", "ppl"):
    if "evaluation" in result["tasks"].get(task, {}):
      continue
    partial = result["tasks"].setdefault(task, {"search": []})
    result["tasks"][task] = calibrate(model, task, size, partial["search"], save)
    save()
  add_holm(result["tasks"])
  result.update(git_commit=git_commit(), machine=machine_info(), sources=sources(),
                device=str(jax.devices()[0].device_kind))
  save()
  for task, t in result["tasks"].items():
    metric = TASKS[task].metric
    print(f"{task}: best on calibration {t['best'][metric]['mean_diff']:+.5f}, on evaluation "
          f"{t['evaluation'][metric]['mean_diff']:+.5f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
