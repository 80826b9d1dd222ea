"""E5: sweeps of K (number of attractors) and lambda (decay): KL to the baseline, seed spread.

    python -m experiments.e5_sweeps [--quick]  ->  results/e5_sweeps.json, .png

Text: the first 256 tokens of *Persuasion* (held out from the presets' defaults), two
128-token windows, scored token by token (every pass updates the layer) for 8 seeds in one
vmapped call per setting. Per setting: mean KL(baseline || layer) per token, the change in
perplexity, and the seed-to-seed spread (std of per-seed perplexity).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.data import load_text
from attractor_jax.results import git_commit, machine_info
from attractor_jax.writing import write_json_atomic
from attractor_jax.scoring import baseline_logp, stepwise_nll, text_windows, window_nll
from experiments.common import plot_lines

K_VALUES = (1, 4, 16, 64, 256)
LAMBDAS = (0.0, 0.01, 0.1, 0.5, 1.0)


def settings(quick: bool):
  base = aj.presets["seed"]
  ks, lams = ((4,), (1.0,)) if quick else (K_VALUES, LAMBDAS)
  for k in ks:
    yield "K", k, dataclasses.replace(base, num_attractors=k)
  for lam in lams:
    yield "lambda", lam, dataclasses.replace(
        base, timescales=(dataclasses.replace(base.timescales[0], lam=lam),))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="results/e5_sweeps.json")
  args = parser.parse_args(argv)
  seeds, window, max_tokens = (2, 16, 32) if args.quick else (8, 128, 256)
  t0 = time.time()
  model = aj.load()
  windows = text_windows(model, load_text("persuasion"), window, max_tokens)
  base_nll = window_nll(model, windows)
  predictions = windows.size - len(windows)
  base_ppl = float(np.exp(base_nll.sum() / predictions))
  ref = baseline_logp(model, windows)
  rows = []
  for axis, value, memory in tqdm(list(settings(args.quick)), desc="E5 settings", file=sys.stderr):
    nll, kl, _ = stepwise_nll(model, windows, memory, seeds, ref)
    ppl_S = np.exp(nll.sum(1) / predictions)
    kl_S = kl.sum(1) / predictions
    rows.append({"axis": axis, "value": value, "kl_per_token": stats.summarize(kl_S),
                 "ppl": stats.summarize(ppl_S), "ppl_seed_std": float(ppl_S.std(ddof=1)),
                 "delta_ppl_pct": float(100 * (ppl_S.mean() / base_ppl - 1))})
  for axis in ("K", "lambda"):
    part = [r for r in rows if r["axis"] == axis]
    plot_lines(args.out.replace(".json", f"_{axis}.png"),
               {"KL per token (x1000)": [1e3 * r["kl_per_token"]["mean"] for r in part],
                "seed std of ppl (x100)": [1e2 * r["ppl_seed_std"] for r in part]},
               x=list(range(len(part))), xlabel=f"{axis}: " + ", ".join(str(r["value"]) for r in part),
               ylabel="value", title=f"E5: sweep of {axis} (preset seed otherwise)")
  write_json_atomic(args.out, {
      "experiment": "E5", "claim": "too many attractors unstable; heavy decay stateless",
      "model": model.spec, "data": f"persuasion, first {windows.size} tokens, {window}-token windows",
      "seeds": seeds, "baseline_ppl": base_ppl, "rows": rows,
      "plots": [args.out.replace(".json", f"_{a}.png") for a in ("K", "lambda")],
      "git_commit": git_commit(), "machine": machine_info(), "wall_s": time.time() - t0,
      "quick": args.quick})


if __name__ == "__main__":
  main()
