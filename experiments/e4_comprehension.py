"""E4: multiple-choice comprehension (answers ranked by log-likelihood), presets paired with off.

    python -m experiments.e4_comprehension [--quick]  ->  results/e4_comprehension.json

Items: generated short stories (attractor_jax.evals.tasks.comprehension_items, test split,
seed 0). Contexts are read token by token, one pass per token as in generation (in 16-token
passes `gated`'s similarity gate never opened within an item); each choice is one more pass.
An item's score under a preset is its accuracy averaged over seeds, which vary only the
memory's initial noise; the bootstrap resamples stories (clusters).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.evals.choice import choice_scores
from attractor_jax.evals.tasks import comprehension_items
from attractor_jax.results import git_commit, machine_info
from attractor_jax.writing import write_json_atomic

SEGMENT = 1


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default="seed,gated,multiscale")
  parser.add_argument("--seeds", type=int, default=2, help="1 suits deterministic memories")
  parser.add_argument("--out", default="results/e4_comprehension.json")
  args = parser.parse_args(argv)
  n, seeds = (8, 2) if args.quick else (200, args.seeds)
  presets = args.presets.split(",")[:1] if args.quick else args.presets.split(",")
  t0 = time.time()
  model = aj.load()
  items = comprehension_items(n, seed=0, split="test")
  answer_I = np.array([it.answer for it in items])
  clusters = np.array([it.cluster for it in items])
  contexts, choices = [it.prompt for it in items], [it.choices for it in items]
  scores, gate_open = {}, {}
  for preset in tqdm(["off", *presets], desc="E4 presets", file=sys.stderr):
    scored = choice_scores(model, contexts, choices, memory=aj.presets[preset],
                           seeds=1 if preset == "off" else seeds, segment=SEGMENT)
    lp_SxIxC = scored.logprob
    gate_open[preset] = scored.gate_share()
    correct_SxI = lp_SxIxC.argmax(-1) == answer_I[None]
    gold_SxI = np.take_along_axis(lp_SxIxC, answer_I[None, :, None], 2)[..., 0]
    scores[preset] = {"accuracy": correct_SxI.mean(0), "gold_logprob": gold_SxI.mean(0),
                      "per_seed_accuracy": correct_SxI.mean(1).tolist()}
  summary = {p: {m: stats.summarize(s[m], clusters=clusters) for m in ("accuracy", "gold_logprob")}
             | {"per_seed_accuracy": s["per_seed_accuracy"]} for p, s in scores.items()}
  paired = {p: {m: stats.paired(scores[p][m], scores["off"][m], clusters=clusters)
                for m in ("accuracy", "gold_logprob")} for p in presets}
  write_json_atomic(args.out, {
      "experiment": "E4", "claim": "+3.3% with gating + burn-in on a short comprehension task",
      "model": model.spec, "data": "comprehension_items(test split, seed 0)", "n_items": n,
      "n_stories": int(len(set(clusters.tolist()))), "seeds": seeds, "segment": SEGMENT,
      "chance": 1 / len(choices[0]), "presets": presets, "gate_open": gate_open,
      "summary": summary,
      "paired_vs_off": paired, "git_commit": git_commit(), "machine": machine_info(),
      "wall_s": time.time() - t0, "quick": args.quick})


if __name__ == "__main__":
  main()
