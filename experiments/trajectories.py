"""Strength trajectories and drift curves of the attractor presets on one long generation:
E3's rows for its first prompt, the opening of *Emma* (8 seeds, 500 tokens, temperature 0.8,
top-p 0.95), written by

    python -m experiments.e3_generation --trajectories results/trajectories.json

Plots: each attractor's strength over the generation (seed 0; one panel per preset, all
banks), and the drift from the prompt (cosine of each 50-token window's mean final hidden
state with the prompt's), mean over seeds, with `off` for reference.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic
from experiments.common import plot_lines


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


def write(path: str, drift: dict, runs: dict, *, model_spec, data: str, seeds: int, tokens: int,
          sampling: dict, quick: bool):
  """`drift`: preset -> mean drift per 50-token window over the prompt's seeds (`off` first);
  `runs`: preset -> the prompt's SeedRuns (tokens and trace of every seed).
  Writes the JSON at `path` and its plots beside it."""
  strengths, final = {}, {}
  for preset, run in runs.items():
    strength = getattr(run.trace.info, "strength", None)  # the attractor layer's only
    if strength is not None:
      n = len(run.tokens[0])
      s_TxA = np.asarray(strength[0][:n]).reshape(n, -1)
      strengths[preset] = s_TxA
      final[preset] = {"mean_strength_end": float(s_TxA[-1].mean()),
                       "max_strength_end": float(s_TxA[-1].max()),
                       "attractors_above_0.5_end": int((s_TxA[-1] > 0.5).sum())}
  stem = pathlib.Path(path).with_suffix("")
  strength_plot, drift_plot = f"{stem}_strength.png", f"{stem}_drift.png"
  if strengths:  # memories other than the attractor layer record no strength
    plot_strengths(strength_plot, strengths)
  plot_lines(drift_plot, drift, x=[50 * (i + 1) for i in range(len(drift["off"]))],
             xlabel="generated tokens (end of 50-token window)",
             ylabel="cos(window mean hidden, prompt mean hidden)",
             title="Drift from the prompt (Emma opening, mean over seeds)")
  write_json_atomic(path, {
      "experiment": "trajectories", "model": model_spec, "data": data, "seeds": seeds,
      "max_new_tokens": tokens, "sampling": sampling, "drift_by_position": drift,
      "strength_seed0_end": final,
      "plots": [strength_plot, drift_plot] if strengths else [drift_plot],
      "from": "experiments.e3_generation (its first prompt's rows)", "git_commit": git_commit(),
      "machine": machine_info(), "sources": sources(), "quick": quick})


if __name__ == "__main__":
  sys.exit("trajectories are written by E3's generations: "
           "python -m experiments.e3_generation --trajectories results/trajectories.json")
