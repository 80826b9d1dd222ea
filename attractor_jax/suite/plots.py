"""A scorecard as a figure: per task, every arm's change from off with its CI and the MDE."""

from __future__ import annotations


def scorecard_figure(card):
  """One panel per task: the memory, its controls and the tuned cache against off (the main
  metric's mean difference per cluster, 95% t CI), the band of +-MDE shaded."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tasks = list(card.tasks.items())
  fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
  for ax, (name, task) in zip(axes[0], tasks):
    metric, comparisons = task["metric"], task["comparisons"]
    arms = [("memory", "vs_off"), *[(k[:-len("_vs_off")], k) for k in comparisons
                                     if k.startswith("control:")],
            ("tuned cache", "positive_vs_off")]
    for y, (label, key) in enumerate(arms):
      test = comparisons[key][metric]
      lo, hi = test["t_ci95"]
      ax.errorbar(test["mean_diff"], y, xerr=[[test["mean_diff"] - lo], [hi - test["mean_diff"]]],
                  fmt="o", capsize=3, color="C0" if label == "memory" else "C7")
    mde = comparisons["vs_off"][metric]["mde"]
    if mde:
      ax.axvspan(-mde, mde, color="C1", alpha=0.15, label="+-MDE")
      ax.legend(fontsize=7, loc="best")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(arms)), [label for label, _ in arms], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} - off ({task['better']} is better)", fontsize=8)
    ax.set_title(f"{name}: {task['verdict']}", fontsize=8, wrap=True)
  fig.suptitle(f"{card.memory} on {card.model}" + (" (quick)" if card.quick else ""))
  fig.tight_layout()
  return fig
