"""E3's accuracy: recall of a fact stated in the prompt after a long generated continuation.

    python -m experiments.e3_fact_recall [--quick] [--presets seed,gated,multiscale] [--items 8]
        [--tokens 500]
        ->  results/e3_fact_recall.json

Each item states a fact ("Remember this: the blue box is in the attic."), opens a story, and
the model continues it for `tokens` tokens (temperature 0.8, top-p 0.95, the memory on; all
items x 8 seeds in one vmapped call, so the prompts are left-padded with newlines to one
length); then the question is asked after the continuation and the four
answers are ranked by log-likelihood, read with the memory on (16-token passes, fresh state).
Also measured: the accuracy of `off` with the question right after the prompt (no
continuation), the reference for a "drop". Paired with off over items (per-item accuracy
averaged over seeds; the bootstrap resamples items).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.evals.choice import choice_logprobs
from attractor_jax.evals.tasks import fact_recall_items
from attractor_jax.prompts import left_padded
from attractor_jax.results import git_commit, machine_info
from attractor_jax.writing import write_json_atomic


def accuracy(model, contexts, items, memory) -> np.ndarray:
  """Correct or not, per context (one item per context, in order)."""
  lp = choice_logprobs(model, contexts, [it.choices for it in items], memory=memory, seeds=1)[0]
  return lp.argmax(-1) == np.array([it.answer for it in items])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default="seed,gated,multiscale")
  parser.add_argument("--items", type=int, default=8)
  parser.add_argument("--tokens", type=int, default=500)
  parser.add_argument("--out", default="results/e3_fact_recall.json")
  args = parser.parse_args(argv)
  n, seeds, tokens = (2, 2, 40) if args.quick else (args.items, 8, args.tokens)
  presets = args.presets.split(",")[:1] if args.quick else args.presets.split(",")
  t0 = time.time()
  model = aj.load()
  items = fact_recall_items(n, seed=0)
  immediate = accuracy(model, [it.question_prompt("") for it in items], items, aj.presets["off"])
  per_item, texts = {}, {}
  prompts = list(left_padded(model, [it.prompt for it in items]))
  bar = tqdm(total=1 + len(presets), desc="E3 fact recall (all items x seeds per call)",
             file=sys.stderr)
  for preset in ("off", *presets):
    memory = aj.presets[preset]
    runs = aj.generate_prompts(model, prompts, tokens, memory=memory, seeds=seeds,
                               temperature=0.8, top_p=0.95)
    contexts = [it.question_prompt(model.tokenizer.decode(toks))
                for it, run in zip(items, runs) for toks in run.tokens]
    asked = [it for it in items for _ in range(seeds)]
    correct = accuracy(model, contexts, asked, memory).reshape(n, seeds)
    per_item[preset] = correct.mean(1)
    texts[preset] = contexts[0]
    bar.update()
  bar.close()
  write_json_atomic(args.out, {
      "experiment": "E3-recall", "claim": "~80% accuracy drop on ~500-token generation (seed)",
      "model": model.spec, "data": "fact_recall_items(seed 0)", "n_items": n, "seeds": seeds,
      "max_new_tokens": tokens, "sampling": {"temperature": 0.8, "top_p": 0.95},
      "chance": 1 / len(items[0].choices), "presets": presets,
      "immediate_accuracy_off": float(immediate.mean()),
      "summary": {p: stats.summarize(a) for p, a in per_item.items()},
      "paired_vs_off": {p: {"accuracy": stats.paired(per_item[p], per_item["off"])}
                        for p in presets},
      "example_context": texts, "git_commit": git_commit(), "machine": machine_info(),
      "wall_s": time.time() - t0, "quick": args.quick})


if __name__ == "__main__":
  main()
