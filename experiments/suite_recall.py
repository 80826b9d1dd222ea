"""The suite's recall task: last-word cloze (LAMBADA-like), paired with off.

    python -m experiments.suite_recall [--quick] [--presets seed,gated,multiscale] [--seeds 2]
        ->  results/suite_recall.json

Passages of *Mansfield Park* (48 chapters; the calibration novel is *Emma*) cut right before a
word that occurs earlier in the passage; scored by greedy accuracy (every token of the word is
the argmax) and the word's log-likelihood. Contexts are read token by token, as in generation
(in 16-token passes `gated`'s gate almost never opened: 0.016% of passes at git 886015f). An item's score under a preset is
its mean over seeds, which vary only the memory's initial noise; paired with off over items
clustered by chapter, with each preset's minimum detectable effect and Holm-adjusted p.
Key-value recall is the dose-response study's kv task (`experiments/dose.py`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from tqdm import tqdm

import attractor_jax as aj
from attractor_jax.evals.tasks import cloze_items
from attractor_jax.results import provenance
from attractor_jax.writing import write_json_atomic
from experiments.choice_task import compare_with_off, preset_scores

SEGMENT = 1
CLOZE_NOVEL = "mansfieldpark"
N_CLOZE = 128  # passages from 40+ of its chapters (the clusters)
CONTEXT_WORDS = (60, 120)
QUICK_CONTEXT_WORDS, QUICK_SEGMENT = (25, 40), 16  # --quick: 16-token passes, every context in
# one 64-token bucket (one compile per engine); a smoke run checks plumbing, not gates


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default="seed,gated,multiscale")
  parser.add_argument("--seeds", type=int, default=2, help="1 suits deterministic memories")
  parser.add_argument("--out", default="results/suite_recall.json")
  args = parser.parse_args(argv)
  if args.quick:
    n_cloze, seeds, presets, segment = 8, 2, args.presets.split(",")[:1], QUICK_SEGMENT
    words = QUICK_CONTEXT_WORDS
  else:
    n_cloze, seeds, presets, segment = N_CLOZE, args.seeds, args.presets.split(","), SEGMENT
    words = CONTEXT_WORDS
  t0 = time.time()
  model = aj.load()
  cloze = cloze_items(CLOZE_NOVEL, n_cloze, seed=0, context_words=words)
  scores, gate_open = {}, {}
  for preset in tqdm(["off", *presets], desc="suite recall presets", file=sys.stderr):
    scores[preset], gate_open[preset] = preset_scores(
        model, [it.context for it in cloze], [(it.target,) for it in cloze], [0] * len(cloze),
        preset, seeds, segment)
  write_json_atomic(pathlib.Path(args.out), {
      "experiment": "suite-recall", "model": model.spec, "seeds": seeds, "segment": segment,
      "presets": presets,
      "cloze": {"data": f"cloze_items({CLOZE_NOVEL!r}, seed 0, context_words {words})",
                "n_items": n_cloze,
                "n_chapters": len({it.cluster for it in cloze}),
                **compare_with_off(scores, gate_open, presets,
                                   clusters=[it.cluster for it in cloze])},
      **provenance(time.time() - t0),
      "quick": args.quick})


if __name__ == "__main__":
  main()
