"""Scoring a multiple-choice (or one-choice greedy) task under a preset, and its comparison
with off: shared by E4 and the suite's recall tasks."""

from __future__ import annotations

import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.evals.choice import choice_scores


def preset_scores(model, contexts, choices, answers, preset: str, seeds: int, segment: int):
  """Per item, mean over seeds: accuracy and the gold answer's log-likelihood (accuracy is
  "ranked first" with several choices, "every token the argmax" (greedy) with one); and the
  share of context passes with the gate open (None: no gate)."""
  answers_I = np.asarray(answers)
  scored = choice_scores(model, contexts, choices, memory=aj.presets[preset],
                         seeds=1 if preset == "off" else seeds, segment=segment)
  lp_SxIxC, greedy_SxIxC = scored.logprob, scored.greedy
  gold_SxI = np.take_along_axis(lp_SxIxC, answers_I[None, :, None], 2)[..., 0]
  correct_SxI = (greedy_SxIxC[..., 0] if lp_SxIxC.shape[2] == 1
                 else lp_SxIxC.argmax(-1) == answers_I[None])
  return {"accuracy": correct_SxI.mean(0), "gold_logprob": gold_SxI.mean(0)}, scored.gate_share()


def compare_with_off(scores: dict, gate_open: dict, presets: list[str], clusters=None) -> dict:
  """Summaries, and each preset paired with off per metric: the cluster bootstrap CI and
  sign-flip p (`stats.paired`), the minimum detectable effect at 80% power over cluster means
  (`stats.cluster_comparison`), and Holm-adjusted p over the presets."""
  items = np.arange(len(scores["off"]["accuracy"]))
  paired = {p: {} for p in presets}
  for metric in scores["off"]:
    for p in presets:
      test = stats.paired(scores[p][metric], scores["off"][metric], clusters=clusters)
      diffs_G = stats.cluster_means(scores[p][metric] - scores["off"][metric],
                              items if clusters is None else clusters)
      paired[p][metric] = test | {"clusters": len(diffs_G),
                                  "mde": stats.cluster_comparison(diffs_G)["mde"]}
    adjusted = stats.holm([paired[p][metric]["p_value"] for p in presets])
    for p, p_holm in zip(presets, adjusted):
      paired[p][metric]["p_holm"] = p_holm
  return {
      "gate_open": gate_open,
      "summary": {p: {m: stats.summarize(v, clusters=clusters) for m, v in s.items()}
                  for p, s in scores.items()},
      "paired_vs_off": paired,
  }
