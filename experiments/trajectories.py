"""Strength trajectories and drift curves of the attractor presets on one long generation.

    python -m experiments.trajectories [--quick]  ->  results/trajectories.json, .png

Prompt: the opening of *Emma* (E3's first prompt); 8 seeds, 500 tokens, temperature 0.8,
top-p 0.95, one vmapped call per preset. Plots: each attractor's strength over the
generation (seed 0; one panel per preset, all banks), and the drift from the prompt (cosine
of each 50-token window's mean final hidden state with the prompt's), mean over seeds, with
`off` for reference.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax.evals.metrics import window_drift
from attractor_jax.results import git_commit, machine_info, write_json_atomic
from experiments.common import plot_lines
from experiments.e3_generation import opening_ids, prompt_vector

PRESETS = ("seed", "gated", "multiscale")


def plot_strengths(path: str, strengths: dict[str, np.ndarray]):
  """One panel per preset: every attractor's strength [tokens, banks * K] over tokens."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(strengths), figsize=(5 * len(strengths), 3.5), squeeze=False)
  for ax, (name, s_TxA) in zip(axes[0], strengths.items()):
    ax.plot(np.arange(len(s_TxA)), s_TxA, linewidth=0.8)
    ax.set(title=f"{name}: strength of each attractor (seed 0)", xlabel="pass (generated token)",
           ylabel="strength", ylim=(0, 1))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="results/trajectories.json")
  args = parser.parse_args(argv)
  seeds, tokens = (2, 60) if args.quick else (8, 500)
  presets = PRESETS[:1] if args.quick else PRESETS
  t0 = time.time()
  model = aj.load()
  ids = opening_ids(model, "emma")
  prompt_D = prompt_vector(model, ids)
  drift, strengths, final = {}, {}, {}
  for preset in tqdm(("off", *presets), desc="trajectories", file=sys.stderr):
    run = aj.generate_seeds(model, ids, tokens, attractor=aj.presets[preset], seeds=seeds,
                            temperature=0.8, top_p=0.95)
    curves = [window_drift(np.asarray(run["trace"].hidden[s][: len(t)]), prompt_D, 50)
              for s, t in enumerate(run["tokens"])]
    width = max(len(c) for c in curves)
    drift[preset] = np.nanmean([np.pad(c, (0, width - len(c)), constant_values=np.nan)
                                for c in curves], axis=0).tolist()
    if preset != "off":
      n = len(run["tokens"][0])
      s_TxA = np.asarray(run["trace"].strength[0][:n]).reshape(n, -1)
      strengths[preset] = s_TxA
      final[preset] = {"mean_strength_end": float(s_TxA[-1].mean()),
                       "max_strength_end": float(s_TxA[-1].max()),
                       "attractors_above_0.5_end": int((s_TxA[-1] > 0.5).sum())}
  strength_plot = args.out.replace(".json", "_strength.png")
  drift_plot = args.out.replace(".json", "_drift.png")
  plot_strengths(strength_plot, strengths)
  plot_lines(drift_plot, drift, x=[50 * (i + 1) for i in range(len(drift["off"]))],
             xlabel="generated tokens (end of 50-token window)",
             ylabel="cos(window mean hidden, prompt mean hidden)",
             title="Drift from the prompt (Emma opening, mean over seeds)")
  write_json_atomic(args.out, {
      "experiment": "trajectories", "model": model.spec, "data": "first 64 tokens of emma, chapter 1",
      "seeds": seeds, "max_new_tokens": tokens, "sampling": {"temperature": 0.8, "top_p": 0.95},
      "drift_by_position": drift, "strength_seed0_end": final,
      "plots": [strength_plot, drift_plot], "git_commit": git_commit(), "machine": machine_info(),
      "wall_s": time.time() - t0, "quick": args.quick})


if __name__ == "__main__":
  main()
