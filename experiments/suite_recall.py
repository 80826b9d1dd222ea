"""The suite's recall tasks: last-word cloze (LAMBADA-like) and key-value recall (MQAR-like).

    python -m experiments.suite_recall [--quick] [--presets seed,gated,multiscale] [--seeds 2]
        ->  results/suite_recall.json, results/suite_recall_kv.png

Cloze: passages of *Mansfield Park* (48 chapters; the calibration novel is *Emma*) cut right before a word
that occurs earlier in the passage; scored by greedy accuracy (every token of the word is
the argmax) and the word's log-likelihood. Key-value recall: "The key for the <key> is
<value>." pairs, then `distance` filler sentences of *Pride and Prejudice*, then a question
whose four values (distractors from the same context) are ranked by log-likelihood; swept
over the number of pairs (2, 8, 16) and the distance (0, 8 sentences). Contexts are read
token by token, as in generation (in 16-token passes `gated`'s gate opened on 0.02% of cloze
passes and 5% of key-value ones). An item's score under a preset is its mean over seeds, which
vary only the memory's initial noise; paired with off over items (cloze clustered by chapter),
with each preset's minimum detectable effect and Holm-adjusted p.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax.evals.tasks import cloze_items, kv_recall_items
from attractor_jax.results import git_commit, machine_info
from attractor_jax.writing import write_json_atomic
from experiments.choice_task import compare_with_off, preset_scores
from experiments.common import plot_lines

SEGMENT = 1
QUICK_SEGMENT = 16  # the smoke run reads in 16-token passes: it checks plumbing, not the gate
CLOZE_NOVEL = "mansfieldpark"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default="seed,gated,multiscale")
  parser.add_argument("--seeds", type=int, default=2, help="1 suits deterministic memories")
  parser.add_argument("--out", default="results/suite_recall.json")
  args = parser.parse_args(argv)
  if args.quick:
    n_cloze, n_kv, pairs, distances, seeds = 8, 2, (2, 4), (0, 2), 2  # two length buckets
    presets, segment = args.presets.split(",")[:1], QUICK_SEGMENT
  else:
    n_cloze, n_kv, pairs, distances, seeds = 64, 16, (2, 8, 16), (0, 8), args.seeds
    presets, segment = args.presets.split(","), SEGMENT
  t0 = time.time()
  model = aj.load()
  cloze = cloze_items(CLOZE_NOVEL, n_cloze, seed=0)
  cells = list(itertools.product(pairs, distances))
  kv = [it for p, d in cells for it in kv_recall_items(p, d, n_kv, seed=0)]
  cloze_scores, kv_scores, cloze_gate, kv_gate = {}, {}, {}, {}
  for preset in tqdm(["off", *presets], desc="suite recall presets", file=sys.stderr):
    cloze_scores[preset], cloze_gate[preset] = preset_scores(
        model, [it.context for it in cloze], [(it.target,) for it in cloze], [0] * len(cloze),
        preset, seeds, segment)
    kv_scores[preset], kv_gate[preset] = preset_scores(
        model, [it.prompt for it in kv], [it.choices for it in kv], [it.answer for it in kv],
        preset, seeds, segment)
  cell_index = np.repeat(np.arange(len(cells)), n_kv)
  by_cell = {p: {f"pairs={a},distance={b}": float(s["accuracy"][cell_index == c].mean())
                 for c, (a, b) in enumerate(cells)} for p, s in kv_scores.items()}
  out = pathlib.Path(args.out)
  plot_lines(str(out.with_name(out.stem + "_kv.png")),
             {p: [float(np.mean([by_cell[p][f"pairs={a},distance={d}"] for a in pairs]))
                  for d in distances] for p in by_cell},
             x=list(distances), xlabel="filler sentences between the pairs and the question",
             ylabel="accuracy (mean over pair counts)", title="Key-value recall (MQAR-like)")
  write_json_atomic(out, {
      "experiment": "suite-recall", "model": model.spec, "seeds": seeds, "segment": segment,
      "presets": presets,
      "cloze": {"data": f"cloze_items({CLOZE_NOVEL!r}, seed 0)", "n_items": n_cloze,
                "n_chapters": len({it.cluster for it in cloze}),
                **compare_with_off(cloze_scores, cloze_gate, presets,
                           clusters=[it.cluster for it in cloze])},
      "kv_recall": {"data": "kv_recall_items(seed 0), filler from prideprejudice",
                    "n_items": len(kv), "items_per_cell": n_kv, "pairs": list(pairs),
                    "distances": list(distances), "chance": 1 / len(kv[0].choices),
                    "accuracy_by_cell": by_cell, **compare_with_off(kv_scores, kv_gate, presets)},
      "git_commit": git_commit(), "machine": machine_info(), "wall_s": time.time() - t0,
      "quick": args.quick})


if __name__ == "__main__":
  main()
