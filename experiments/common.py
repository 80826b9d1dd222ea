"""Plots, generation read-outs and test annotations shared by the experiments."""

from __future__ import annotations

import jax
import numpy as np

from attractor_jax import stats


def plot_lines(path: str, series: dict[str, list[float]], *, x, xlabel: str, ylabel: str,
               title: str):
  """One PNG with a line per series."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, ys in series.items():
    ax.plot(x[: len(ys)], ys, marker="o", label=name)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def gate_share(runs) -> float | None:
  """The share of generation passes whose gate was open (the memory's "gate_open" activity,
  `Memory.activity`): each row's share over its generated tokens, averaged over every run's
  rows; None for no memory or one that does not report it."""
  memory = runs[0].memory
  if memory is None:
    return None
  shares = []
  for run in runs:
    per_pass = jax.vmap(jax.vmap(memory.activity))(run.trace.info)
    if "gate_open" not in per_pass:
      return None
    shares += [float(np.asarray(per_pass["gate_open"][s][: len(toks)]).mean())
               for s, toks in enumerate(run.tokens)]
  return float(np.mean(shares))


def add_mde_and_holm(paired: dict, diffs: dict, clusters) -> None:
  """Adds to each preset's paired test of each metric (`paired[preset][metric]`, in place):
  its cluster count and minimum detectable effect at 80% power over the cluster means of
  `diffs[preset][metric]` (per-item treatment - off; NaN items left out), and its Holm-adjusted
  p over the presets."""
  clusters_N = np.asarray(clusters)
  presets = list(paired)
  for metric in paired[presets[0]]:
    for p in presets:
      d_N = np.asarray(diffs[p][metric], float)
      kept = np.isfinite(d_N)
      d_G = stats.cluster_means(d_N[kept], clusters_N[kept])
      paired[p][metric] |= {"clusters": len(d_G), "mde": (
          stats.cluster_comparison(d_G)["mde"] if len(d_G) >= 3 else None)}
    for p, p_holm in zip(presets, stats.holm([paired[p][metric]["p_value"] for p in presets])):
      paired[p][metric]["p_holm"] = p_holm
