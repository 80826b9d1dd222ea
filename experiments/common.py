"""Plots and generation read-outs shared by the experiments."""

from __future__ import annotations

import numpy as np

from attractor_jax.memories.base import gate_open


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
  """The share of generation passes whose gate was open (`gate_open` over banks): each
  row's share over its generated tokens, averaged over every run's rows; None for no memory or
  one without a gate."""
  info = runs[0].trace.info
  if getattr(info, "gate", None) is None:
    return None
  shares = [float(gate_open(np.asarray(run.trace.info.gate[s][: len(toks)])).mean())
            for run in runs for s, toks in enumerate(run.tokens)]
  return float(np.mean(shares))
