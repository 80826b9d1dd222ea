"""E3: repetition and drift on long generations, each preset paired with `off` (same seeds).

    python -m experiments.e3_generation [--quick] [--presets a,b] [--tokens N]
        ->  results/e3_generation.json, .png

Prompts are the openings of chapters 1-8 of four Austen novels (32 prompts, the clusters);
every (prompt, seed) pair is one item, and the bootstrap resamples prompts; each preset's
minimum detectable effect (80% power, over prompt means) and Holm-adjusted p over the presets
stand beside its CI. Sampling: temperature 0.8, top-p 0.95, so the
seeds vary both the attractor init and the sampling; `off` gets the same sampling keys.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.evals.metrics import (distinct_n, rep_l, repetition_by_position, seq_rep_n,
                                         window_drift)
from attractor_jax.evals.tasks import chapter_text
from attractor_jax.prompts import prompt_ids
from attractor_jax.results import provenance
from attractor_jax.writing import write_json_atomic
from experiments import trajectories
from experiments.common import add_mde_and_holm, gate_share, plot_lines

NOVELS = ("emma", "persuasion", "northangerabbey", "sensesensibility")
CHAPTERS = 8  # openings per novel
PRESETS = ("seed", "gated", "multiscale")


PROMPT_TOKENS = 64  # one prompt shape: one compilation per preset
SAMPLING = {"temperature": 0.8, "top_p": 0.95}


def describe_opening(novel: str, chapter: int) -> str:
  """The data field of a prompt made by `opening_ids`."""
  return f"first {PROMPT_TOKENS} tokens of {novel}, chapter {chapter + 1}"


def opening_ids(model, novel: str, chapter: int) -> list[int]:
  """The first 64 tokens of one chapter (0-based) of the novel."""
  body = " ".join(chapter_text(novel, chapter).split()[:120])
  return prompt_ids(model, body)[:PROMPT_TOKENS].tolist()


def prompt_vector(model, ids) -> np.ndarray:
  """Mean final hidden state over the prompt (the drift reference)."""
  return np.asarray(model.taps(ids).hidden[0]).mean(axis=0)


def item_metrics(tokens, hidden_TxD, prompt_D) -> dict:
  return {"seq_rep_4": seq_rep_n(tokens, 4), "rep_128": rep_l(tokens, 128),
          "distinct_2": distinct_n(tokens, 2),
          "drift_last_cos": float(window_drift(hidden_TxD, prompt_D, 50)[-1])
          if len(tokens) >= 50 else float("nan")}


def _window_means(curves: dict[str, list[list[float]]]) -> dict[str, list[float]]:
  """Mean per 50-token window over items; continuations that stopped at EOS drop out of the
  later windows' means."""
  width = max(len(c) for cs in curves.values() for c in cs)
  padded = lambda c: np.pad(np.asarray(c, float), (0, width - len(c)), constant_values=np.nan)
  return {p: np.nanmean([padded(c) for c in cs], axis=0).tolist() for p, cs in curves.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--tokens", type=int, default=500, help="tokens generated per item")
  parser.add_argument("--out", default="results/e3_generation.json")
  parser.add_argument("--trajectories", default=None, metavar="PATH",
                      help="also write the first prompt's strength and drift curves here "
                           "(experiments.trajectories)")
  args = parser.parse_args(argv)
  seeds, tokens, openings = ((2, 60, [(NOVELS[0], 0)]) if args.quick else
                             (2, args.tokens, [(n, c) for n in NOVELS for c in range(CHAPTERS)]))
  presets = args.presets.split(",")[:1] if args.quick else args.presets.split(",")
  t0 = time.time()
  model = aj.load()
  rows, curves, drifts, first_prompt = {p: [] for p in ("off", *presets)}, {}, {}, {}
  gate_open = {}
  prompts = [opening_ids(model, *o) for o in openings]  # one length: one call per preset
  prompt_vectors = [prompt_vector(model, ids) for ids in prompts]
  bar = tqdm(total=1 + len(presets), desc="E3 generations (all novels x seeds per call)",
             file=sys.stderr)
  for preset in ("off", *presets):
    runs = aj.generate_prompts(model, prompts, tokens, memory=aj.presets[preset], seeds=seeds,
                               **SAMPLING)
    first_prompt[preset] = runs[0]
    gate_open[preset] = gate_share(runs)
    for cluster, (run, prompt_D) in enumerate(zip(runs, prompt_vectors)):
      for s, toks in enumerate(run.tokens):
        hidden = np.asarray(run.trace.hidden[s][: len(toks)])
        rows[preset].append({"cluster": cluster, "seed": s, **item_metrics(toks, hidden, prompt_D)})
        curves.setdefault(preset, []).append(repetition_by_position(toks, 4, 50))
        drifts.setdefault(preset, []).append(window_drift(hidden, prompt_D, 50).tolist())
    bar.update()
  bar.close()
  metrics = ["seq_rep_4", "rep_128", "distinct_2", "drift_last_cos"]
  clusters = np.array([r["cluster"] for r in rows["off"]])
  col = lambda p, m: np.array([r[m] for r in rows[p]])
  paired = {p: {m: stats.paired(col(p, m), col("off", m), clusters=clusters) for m in metrics}
            for p in presets}
  add_mde_and_holm(paired, {p: {m: col(p, m) - col("off", m) for m in metrics} for p in presets},
                   clusters)
  summary = {p: {m: stats.summarize(col(p, m), clusters=clusters) for m in metrics}
             for p in ("off", *presets)}
  mean_curves, mean_drifts = _window_means(curves), _window_means(drifts)
  width = len(next(iter(mean_curves.values())))
  plot, drift_plot = args.out.replace(".json", ".png"), args.out.replace(".json", "_drift.png")
  name = "E7" if "e7" in pathlib.Path(args.out).stem else "E3"  # e7_memories.sh runs this too
  plot_lines(plot, mean_curves, x=[50 * (i + 1) for i in range(width)],
             xlabel="generated tokens (end of 50-token window)", ylabel="seq-rep-4 in window",
             title=f"{name}: repetition vs position (mean over prompts x seeds)")
  plot_lines(drift_plot, mean_drifts, x=[50 * (i + 1) for i in range(width)],
             xlabel="generated tokens (end of 50-token window)",
             ylabel="cos(window mean hidden, prompt mean hidden)",
             title=f"{name}: drift from the prompt (mean over prompts x seeds)")
  write_json_atomic(args.out, {
      "experiment": "E3", "claim": "~80% accuracy drop on ~500-token generation (seed)",
      "model": model.spec, "data": [describe_opening(*o) for o in openings],
      "n_items": len(rows["off"]), "seeds": seeds, "max_new_tokens": tokens,
      "sampling": SAMPLING, "presets": list(presets), "gate_open": gate_open,
      "summary": summary, "paired_vs_off": paired, "repetition_by_position": mean_curves,
      "drift_by_position": mean_drifts, "plot": plot, "drift_plot": drift_plot, "items": rows,
      **provenance(time.time() - t0),
      "quick": args.quick})
  if args.trajectories:
    first_drifts = _window_means({p: d[:seeds] for p, d in drifts.items()})  # rows: prompt-major
    trajectories.write(args.trajectories, first_drifts, first_prompt, model_spec=model.spec,
                       data=describe_opening(*openings[0]), seeds=seeds, tokens=tokens,
                       sampling=SAMPLING, quick=args.quick)


if __name__ == "__main__":
  main()
