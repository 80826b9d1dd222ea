"""E5: sweeps of K (number of attractors) and lambda (decay), preset seed otherwise.

    python -m experiments.e5_sweeps [--quick]  ->  results/e5_sweeps.json, _K.png, _lambda.png

Clusters: the dose study's perplexity windows (experiments/dose.py's ppl task: 12 from each of
three novels the presets were not tuned on; a 32-token prompt, then 128 scored tokens), each read
token by token with a fresh memory under SEEDS seeds: rows are windows x seeds, one batched
call per setting. Per setting: the change in NLL per scored token against off, paired over
windows (t and BCa intervals, minimum detectable effect, Holm over the ten settings); the
seed-to-seed spread (per window, the std over seeds of its NLL, averaged over windows); the
share of rows that stayed finite (where instability would show); and what the memory did
(realised |feedback| / residual norm, the winner's share of strength, max similarity).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import forcing, stats
from attractor_jax.results import provenance
from attractor_jax.seeds import stacked_keys
from attractor_jax.writing import write_json_atomic
from experiments.common import plot_lines
from attractor_jax.suite.clusters import NOVELS
from attractor_jax.suite.tasks import PROMPT_LEN
from experiments.dose import TASKS

K_VALUES = (1, 4, 16, 64, 256)
LAMBDAS = (0.0, 0.01, 0.1, 0.5, 1.0)
SEEDS = 2  # seeds vary only the initial noise: the windows are the clusters


def settings(quick: bool):
  base = aj.presets["seed"]
  ks, lams = ((4,), (1.0,)) if quick else (K_VALUES, LAMBDAS)
  for k in ks:
    yield "K", k, dataclasses.replace(base, num_attractors=k)
  for lam in lams:
    yield "lambda", lam, dataclasses.replace(
        base, timescales=(dataclasses.replace(base.timescales[0], lam=lam),))


def sweep_row(model, memory, windows_NxL: np.ndarray, off_nll_N: np.ndarray) -> dict:
  """One setting over every window and seed (seed s of window n is row s * N + n)."""
  rows = np.tile(windows_NxL, (SEEDS, 1))
  keys, _ = stacked_keys(range(rows.shape[0]))
  engine = model.engine(memory)
  forced = forcing.teacher_forced(engine, model.params, jnp.asarray(rows), keys,
                                  prompt_len=PROMPT_LEN)
  nll_SxN = scored_nll(forced).reshape(SEEDS, -1)
  finite_SxN = np.asarray(forced.finite).reshape(SEEDS, -1)
  kept = finite_SxN.all(axis=0)  # windows every seed read without a NaN or Inf
  return {"vs_off": stats.cluster_comparison((nll_SxN.mean(0) - off_nll_N)[kept]),
          "finite_share": float(finite_SxN.mean()),
          "seed_std": float(nll_SxN[:, kept].std(axis=0, ddof=1).mean()),
          "activity": {"feedback_ratio_mean": float(np.mean(forced.feedback_ratio)),
                       **{k: float(np.mean(v))
                          for k, v in forcing.activity(engine, forced.info).items()}}}


def scored_nll(forced) -> np.ndarray:
  """Per row: the mean NLL of the tokens after the prompt."""
  return np.asarray(forced.nll, np.float64)[:, PROMPT_LEN - 1:].mean(axis=1)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="results/e5_sweeps.json")
  args = parser.parse_args(argv)
  t0 = time.time()
  model = aj.load()
  windows = TASKS["ppl"].rows(model, "evaluation", "quick" if args.quick else "full")[:, 0]
  if args.quick:
    windows = windows[:, :PROMPT_LEN + 16]
  keys, _ = stacked_keys(range(windows.shape[0]))
  off_nll = scored_nll(forcing.teacher_forced(model.engine(None), model.params,
                                              jnp.asarray(windows), keys, prompt_len=PROMPT_LEN))
  rows = []
  for axis, value, memory in tqdm(list(settings(args.quick)), desc="E5 settings", file=sys.stderr):
    t = time.time()
    rows.append({"axis": axis, "value": value, **sweep_row(model, memory, windows, off_nll),
                 "seconds": round(time.time() - t, 1)})
  for row, p in zip(rows, stats.holm([r["vs_off"]["p_value"] for r in rows])):
    row["vs_off"]["p_holm"] = p
  for axis in ("K", "lambda"):
    part = [r for r in rows if r["axis"] == axis]
    plot_lines(args.out.replace(".json", f"_{axis}.png"),
               {"NLL change (x1000)": [1e3 * r["vs_off"]["mean_diff"] for r in part],
                "95% t CI low": [1e3 * r["vs_off"]["t_ci95"][0] for r in part],
                "95% t CI high": [1e3 * r["vs_off"]["t_ci95"][1] for r in part],
                "seed std of NLL (x1000)": [1e3 * r["seed_std"] for r in part]},
               x=list(range(len(part))), xlabel=f"{axis}: " + ", ".join(str(r["value"]) for r in part),
               ylabel="nats per token x 1000", title=f"E5: sweep of {axis} (preset seed otherwise)")
  write_json_atomic(args.out, {
      "experiment": "E5", "claim": "too many attractors unstable; heavy decay stateless",
      "model": model.spec, "novels": list(NOVELS["evaluation"]), "clusters": len(windows),
      "data": f"{len(windows)} windows ({windows.shape[1] - PROMPT_LEN} scored tokens after a "
              f"{PROMPT_LEN}-token prompt) from {', '.join(NOVELS['evaluation'])}",
      "seeds": SEEDS, "baseline_nll": float(off_nll.mean()), "rows": rows,
      "plots": [args.out.replace(".json", f"_{a}.png") for a in ("K", "lambda")],
      **provenance(time.time() - t0),
      "quick": args.quick})


if __name__ == "__main__":
  main()
