"""Calibrating `gated` on one split, evaluating on another: the winner's curse, measured.

    python -m experiments.dose_calibrate [--model gemma3-270m]
        ->  results/dose_calibration_<model>.json

Search (stated before the run): preset `gated`, open loop, every combination of
feedback_ratio SEARCH_RATIOS, theta_gate THETAS and burn_in_steps BURN_INS (tokens: rows are
read token by token), scored on windows of the calibration novels (36 clusters, none in the
evaluation novels); the winner is the lowest mean NLL change from off. The winner is then run
on the evaluation windows of experiments/dose.py's ppl task, paired with off: its calibration
and evaluation figures side by side. Both splits are that task's (the suite's Perplexity
configured as one 160-token window a cluster); the gate's openness is the share of banks open,
its mean over every pass (`Memory.activity`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib

import jax
import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic
from attractor_jax.suite.clusters import NOVELS
from experiments.dose import TASKS

SEARCH_RATIOS = (0.01, 0.03, 0.1)
THETAS = (0.3, 0.6, 0.9)
BURN_INS = (0, 16, 64)


def scored_nll(model, memory, rows) -> tuple[np.ndarray, float | None]:
  """Per window the mean NLL of its scored tokens, and the gate's mean openness."""
  measured = TASKS["ppl"].score(model, memory, rows)
  gate = measured.activity.get("gate_open")
  return measured.values["nll"], None if gate is None else float(np.mean(gate))


def finished_rows(partial: pathlib.Path, design: dict, grid: list[tuple]) -> list[dict]:
  """The search rows an interrupted run of the same design and grid left in `partial`."""
  if not partial.exists():
    return []
  old = json.loads(partial.read_text())
  rows = old.get("search", [])
  settings = [(r["feedback_ratio"], r["theta_gate"], r["burn_in_steps"]) for r in rows]
  if {k: old.get(k) for k in design} != design or settings != grid[:len(rows)]:
    print(f"{partial}: another design or grid; the search starts again")
    return []
  print(f"resuming {partial}: {len(rows)} of {len(grid)} settings done")
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or f"results/dose_calibration_{args.model}.json")
  model = aj.load(args.model)
  calib = TASKS["ppl"].rows(model, "calibration", "full")
  evaluation = TASKS["ppl"].rows(model, "evaluation", "full")
  base, _ = scored_nll(model, None, calib)
  partial = out.with_suffix(".partial.json")  # finished search rows: a rerun skips them
  grid = list(itertools.product(SEARCH_RATIOS, THETAS, BURN_INS))
  design = {"model": args.model, "per_novel": TASKS["ppl"].sizes["full"][0]}
  search = finished_rows(partial, design, grid)
  for ratio, theta, burn_in in grid[len(search):]:
    memory = dataclasses.replace(aj.presets["gated"], feedback_ratio=ratio, theta_gate=theta,
                                 burn_in_steps=burn_in)
    nll, gate = scored_nll(model, memory, calib)
    search.append({"feedback_ratio": ratio, "theta_gate": theta, "burn_in_steps": burn_in,
                   "gate_open": gate, **stats.cluster_comparison(nll - base)})
    print(ratio, theta, burn_in, f"{search[-1]['mean_diff']:+.5f}", f"gate {gate:.2f}",
          flush=True)
    write_json_atomic(partial, {**design, "search": search})
  best = min(search, key=lambda r: r["mean_diff"])
  memory = dataclasses.replace(aj.presets["gated"], feedback_ratio=best["feedback_ratio"],
                               theta_gate=best["theta_gate"], burn_in_steps=best["burn_in_steps"])
  eval_base, _ = scored_nll(model, None, evaluation)
  eval_nll, eval_gate = scored_nll(model, memory, evaluation)
  result = {"experiment": "dose-calibration", "model": args.model,
            "calibration_novels": list(NOVELS["calibration"]),
            "evaluation_novels": list(NOVELS["evaluation"]), "clusters": int(calib.shape[0]),
            "search": search, "best": best, "memory": memory.to_dict(),
            "evaluation": {"gate_open": eval_gate,
                           **stats.cluster_comparison(eval_nll - eval_base)},
            "off_nll": {"calibration": float(base.mean()), "evaluation": float(eval_base.mean())},
            "git_commit": git_commit(), "machine": machine_info(), "sources": sources(),
            "device": str(jax.devices()[0].device_kind)}
  write_json_atomic(out, result)
  partial.unlink()
  print(f"best on calibration {best['mean_diff']:+.5f}, on evaluation "
        f"{result['evaluation']['mean_diff']:+.5f}: wrote {out}")


if __name__ == "__main__":
  main()
