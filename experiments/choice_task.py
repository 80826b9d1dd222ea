"""Scoring a multiple-choice (or one-choice greedy) task under a preset, and its comparison
with off: shared by E4 and the suite's recall tasks."""

from __future__ import annotations

import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.evals.choice import choice_scores
from experiments.common import add_mde_and_holm


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
  return {"accuracy": correct_SxI.mean(0), "gold_logprob": gold_SxI.mean(0)}, scored.activity_share("gate_open")


def compare_with_off(scores: dict, gate_open: dict, presets: list[str], clusters=None) -> dict:
  """Summaries, and each preset paired with off per metric: the cluster bootstrap CI and
  sign-flip p (`stats.paired`), the minimum detectable effect at 80% power over cluster means
  (`stats.cluster_comparison`), and Holm-adjusted p over the presets."""
  paired = {p: {m: stats.paired(v, scores["off"][m], clusters=clusters)
              for m, v in scores[p].items()} for p in presets}
  add_mde_and_holm(paired, {p: {m: v - scores["off"][m] for m, v in scores[p].items()}
                            for p in presets},
                   np.arange(len(scores["off"]["accuracy"])) if clusters is None else clusters)
  return {
      "gate_open": gate_open,
      "summary": {p: {m: stats.summarize(v, clusters=clusters) for m, v in s.items()}
                  for p, s in scores.items()},
      "paired_vs_off": paired,
  }
