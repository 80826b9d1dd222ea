"""Plots shared by the experiments."""

from __future__ import annotations


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
