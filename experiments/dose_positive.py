"""The positive control, calibrated: the continuous cache tuned on one split, tested on another.

    python -m experiments.dose_positive [--model gemma3-270m] [--quick]
        ->  results/dose_positive_<model>.json

The cache at its preset (tuned on 4,096-token contexts) is the study's positive control; in
128-token windows it hurts. Can the suite see a working memory at all? Search (stated before
the run): `CacheConfig(window=WINDOW)` at every theta in THETAS and lam in LAMS, on each task's
calibration split (kv: as many items as the evaluation's, drawn with KV_SEEDS["calibration"]; ppl:
windows of the calibration novels); the winner (best mean change of the task's main metric)
then runs on the evaluation split of experiments/dose_response.py (kv items of
KV_SEEDS["evaluation"]; windows of the evaluation novels), paired with off, and so does the preset. Both figures side by side: the winner's curse, measured.
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
from attractor_jax.suite.clusters import KV_PAIRS, KV_PROMPT_LEN, KV_SEEDS, kv_rows
from experiments import dose_response as dose

THETAS = (2.0, 8.0, 32.0)
LAMS = (0.02, 0.1, 0.3, 0.6)
WINDOW = 256  # longer than every row: the cache sees the whole row


class Split:
  """One task's rows on one split, scored by the task's metrics."""

  def __init__(self, model, task: str, split: str, size: int):
    self.model, self.task, self.kv = model, task, None
    if task == "kv":
      self.kv = kv_rows(model, size, seed=KV_SEEDS[split])
      self.rows, self.candidates, self.prompt_len = (self.kv.tokens, self.kv.candidates,
                                                     KV_PROMPT_LEN)
    else:
      novels = dose.CALIBRATION_NOVELS if split == "calibration" else dose.EVAL_NOVELS
      self.rows, _ = dose.ppl_rows(self.model, size, novels)
      self.candidates, self.prompt_len = None, dose.PROMPT_LEN

  def score(self, name: str, memory) -> dict[str, np.ndarray]:
    forced = dose.read_rows(self.model, name, memory, self.rows, self.candidates,
                            self.prompt_len)
    nll = np.asarray(forced.nll, np.float64)
    if self.task == "kv":
      return dose.kv_metrics(nll, np.asarray(forced.candidate_logprob), self.kv)
    return dose.ppl_metrics(nll)


def add_holm(tasks: dict):
  """Holm-adjusted p-values over the winners' evaluation tests (every task and metric)."""
  tests = [t["evaluation"][m] for t in tasks.values() for m in t["evaluation"]]
  for test, adjusted in zip(tests, stats.holm([t["p_value"] for t in tests])):
    test["p_holm"] = adjusted


def calibrate(model, task: str, sizes: dict, done: list, save) -> dict:
  """The search on the calibration split, then the winner and the preset on evaluation."""
  metric, sign = dose.MAIN_METRIC[task]
  calibration = Split(model, task, "calibration", sizes["calibration"])
  off = calibration.score("off", None)
  for theta, lam in list(itertools.product(THETAS, LAMS))[len(done):]:
    memory = aj.CacheConfig(theta=theta, lam=lam, window=WINDOW)
    name = f"cache theta {theta} lam {lam}"
    done.append({"theta": theta, "lam": lam, "git_commit": dose.LOADED_COMMIT,
                 **dose.compare(calibration.score(name, memory), off)})
    print(task, theta, lam, f"{done[-1][metric]['mean_diff']:+.5f}", flush=True)
    save()
  best = max(done, key=lambda r: sign * r[metric]["mean_diff"])
  evaluation = Split(model, task, "evaluation", sizes["evaluation"])
  eval_off = evaluation.score("off", None)
  winner = aj.CacheConfig(theta=best["theta"], lam=best["lam"], window=WINDOW)
  return {"search": done, "best": best, "memory": winner.to_dict(), "git_commit": dose.LOADED_COMMIT,
          "clusters": {"calibration": int(calibration.rows.shape[0]),
                       "evaluation": int(evaluation.rows.shape[0])},
          "off": {"calibration": {m: float(v.mean()) for m, v in off.items()},
                  "evaluation": {m: float(v.mean()) for m, v in eval_off.items()}},
          "evaluation": dose.compare(evaluation.score("winner", winner), eval_off),
          "preset_on_evaluation": dose.compare(evaluation.score("preset", aj.presets["cache"]),
                                               eval_off)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--quick", action="store_true", help="tiny splits: a smoke run")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or f"results/dose_positive_{args.model}.json")
  model = aj.load(args.model)
  items, windows = (8, 1) if args.quick else (dose.KV_ITEMS, 12)
  sizes = {"kv": {"calibration": items, "evaluation": items},
           "ppl": {"calibration": windows, "evaluation": windows}}
  design = {"model": args.model, "sizes": sizes, "thetas": list(THETAS), "lams": list(LAMS),
            "window": WINDOW, "kv_pairs": KV_PAIRS, "kv_prompt_len": KV_PROMPT_LEN,
            "kv_seeds": [KV_SEEDS["calibration"], KV_SEEDS["evaluation"]],
            "prompt_len": dose.PROMPT_LEN,
            "novels": [dose.CALIBRATION_NOVELS, dose.EVAL_NOVELS]}
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
    result["tasks"][task] = calibrate(model, task, sizes[task], partial["search"], save)
    save()
  add_holm(result["tasks"])
  result.update(git_commit=git_commit(), machine=machine_info(), sources=sources(),
                device=str(jax.devices()[0].device_kind))
  save()
  for task, t in result["tasks"].items():
    metric = dose.MAIN_METRIC[task][0]
    print(f"{task}: best on calibration {t['best'][metric]['mean_diff']:+.5f}, on evaluation "
          f"{t['evaluation'][metric]['mean_diff']:+.5f}")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
