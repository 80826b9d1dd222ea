"""A memory's verdict on the suite: one row per task, as JSON and as Markdown."""

from __future__ import annotations

import dataclasses
import json
import pathlib

COLUMNS = (("vs_off", "vs off"), ("vs_matched", "vs its size (average control)"),
           ("vs_positive", "vs the tuned cache"))


@dataclasses.dataclass
class Scorecard:
  """What `evaluate` found. `tasks[name]` holds the task's main metric, its comparisons
  (`stats.cluster_comparison` dicts with "p_holm"), the arms' realised sizes and the verdict."""

  model: str
  memory: str  # as given (a preset name, module:Class or file.py:Class)
  memory_config: dict
  quick: bool
  tasks: dict[str, dict]
  provenance: dict  # commit, machine, wall time, sources (`results.provenance`)
  arm_seconds: float = 0.0  # every arm's own time, reused ones included: a standalone run's cost
  reused: dict = dataclasses.field(default_factory=dict)  # arm key -> the eval it came from

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_json(cls, text: str) -> "Scorecard":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in json.loads(text).items() if k in fields})

  @classmethod
  def load(cls, path) -> "Scorecard":
    return cls.from_json(pathlib.Path(path).read_text())

  def to_markdown(self) -> str:
    lines = [f"## `{self.memory}` on {self.model}" + (" (quick)" if self.quick else ""), "",
             "| task | metric | clusters | " + " | ".join(c for _, c in COLUMNS) + " | verdict |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for name, task in self.tasks.items():
      metric = task["metric"]
      cells = [_cell(task["comparisons"].get(key, {}).get(metric)) for key, _ in COLUMNS]
      lines.append(f"| {name} | {metric} ({task['better']}) | {task['clusters']} | "
                   + " | ".join(cells) + f" | {task['verdict']} |")
    p = self.provenance
    lines += ["", "Each cell: mean difference per cluster [95% t CI] (MDE at 80% power, Holm "
              "family of the task's comparisons); * detectable after Holm. Realised size "
              "(|feedback| / residual norm): " + ", ".join(
                  f"{n} {t['realised_ratio']:.3g}" for n, t in self.tasks.items()) + "."
              + _activity_text(self.tasks),
              f"Ran at commit {str(p.get('git_commit'))[:10]} on {p['machine']['cpus']} "
              f"CPUs ({p['machine']['devices']}): the arms took {self.arm_seconds:.0f} s in "
              f"all (this run {p['wall_s']:.0f} s)"
              + (f"; {len(self.reused)} memory-independent arms were reused from "
                 f"{', '.join(sorted(set(self.reused.values())))}." if self.reused else ".")]
    return "\n".join(lines)


def _cell(test: dict | None) -> str:
  if test is None:
    return "-"
  lo, hi = test["t_ci95"]
  star = "*" if test["p_holm"] < 0.05 else ""
  return f"{test['mean_diff']:+.3g}{star} [{lo:+.3g}, {hi:+.3g}] (MDE {mde_text(test)})"


def mde_text(test: dict) -> str:
  """The MDE for a table; n/a where the planned spread was 0 (no calibration arm moved it)."""
  return "n/a" if test["mde"] is None else f"{test['mde']:.2g}"


def comparison_table(cards: list[Scorecard]) -> str:
  """Several scorecards as one table: per task, each memory's effect against off and its
  verdict."""
  names = sorted({t for c in cards for t in c.tasks})
  lines = ["| memory | model | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
  for c in cards:
    cells = []
    for name in names:
      task = c.tasks.get(name)
      cells.append("-" if task is None else
                   f"{_cell(task['comparisons']['vs_off'][task['metric']])}: {task['verdict']}")
    lines.append(f"| `{c.memory}` | {c.model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _activity_text(tasks: dict) -> str:
  """The memory's own activity per task (`Memory.activity`), where it reports any."""
  shown = [f"{n}: " + ", ".join(f"{k} {v:.3g}" for k, v in t["memory_activity"].items())
           for n, t in tasks.items() if t.get("memory_activity")]
  return f" The memory's activity (mean over passes): {'; '.join(shown)}." if shown else ""
