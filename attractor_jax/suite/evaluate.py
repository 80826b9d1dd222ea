"""`evaluate(model, memory)`: the suite's verdict on one memory (docs/method.md, "The suite").

Per task, on the calibration split: off, the continuous cache over CACHE_GRID (the positive
control is the best of it) and, with `grid`, the memory over its stated values (the best is
evaluated). The spread of the cache grid's per-cluster differences from off (their median SD)
is the planned SD every MDE of the task uses. On the evaluation split: off, the memory, the
controls sized to the memory's realised size (each cluster's mean |feedback made| / residual
norm, imposed on that cluster's row as the control's size for every pass), the tuned cache.
The moving average of x ("average") is the control attribution uses; the prompt mean and a
random direction run beside it in the full suite. Arms that do not depend on the memory (off,
the cache grid, the positive control) can come from an earlier eval of the same model and
clusters (`reuse`); the scorecard names them and counts their time in `arm_seconds`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
from tqdm import tqdm

from attractor_jax import stats
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.controls import ControlConfig
from attractor_jax.results import git_commit, provenance, sources
from attractor_jax.suite.plots import scorecard_figure
from attractor_jax.suite.scorecard import Scorecard, mde_text
from attractor_jax.suite.store import Store
from attractor_jax.suite.tasks import TASKS, Measured

# the positive control's candidates: from sharp and heavy (the kv winner of the earlier search,
# results/dose_positive_smollm2-135m.json) to flat and light
CACHE_GRID = {"quick": ({"theta": 8.0, "lam": 0.3},),
              "full": ({"theta": 2.0, "lam": 0.6}, {"theta": 8.0, "lam": 0.3},
                       {"theta": 32.0, "lam": 0.1})}
CACHE_WINDOW = 512  # no task's row reads more tokens: a longer window would hold nothing more
CONTROLS = {"quick": ("average",), "full": ("average", "prompt", "random")}
SIGNIFICANT = 4  # a control's imposed size keeps 4 significant digits of the realised one


def grid_memories(memory, grid: dict[str, list]) -> dict[str, object]:
  """Every combination of `grid` (field -> values) applied to `memory`, by name."""
  if not grid:
    return {}
  out = {}
  for values in itertools.product(*grid.values()):
    change = dict(zip(grid, values))
    out[",".join(f"{k}={v}" for k, v in change.items())] = dataclasses.replace(memory, **change)
  return out


def realised(ratio_G: np.ndarray) -> np.ndarray:
  """The size a control imposes per cluster: the realised one to SIGNIFICANT digits."""
  return np.asarray([float(f"{r:.{SIGNIFICANT}g}") for r in ratio_G])


def evaluate(model, memory, *, memory_name: str | None = None, tasks=tuple(TASKS),
             quick: bool = False, out=None, grid: dict | None = None, reuse=None,
             progress: bool = True) -> Scorecard:
  """Runs the suite on `memory` (an `attractor_jax.Memory`) and returns its Scorecard; with
  `out`, every finished arm is kept there and a rerun resumes; with `reuse` (an earlier eval's
  out), its memory-independent arms are copied instead of rerun. `tasks`: names in TASKS, or
  Task objects (e.g. another size)."""
  t0 = time.time()
  sources(), git_commit()  # the code and its commit as they are now, should either change
  size = "quick" if quick else "full"
  name = memory_name or type(memory).__name__
  design = {"model": model.spec, "memory": name, "memory_config": memory.to_dict(),
            "quick": quick, "tasks": [_task(t).name for t in tasks], "grid": grid or {},
            "sizes": {_task(t).name: _task(t).sizes[size] for t in tasks}}
  store = Store(out, design, reuse)
  card = {}
  for task in map(_task, tasks):
    task_name = task.name
    bar = tqdm(desc=f"eval {task_name}", total=None, disable=not progress, unit="arm")

    def arm(split, arm_name, arm_memory, rows, ratio_G=None):
      key = f"{task_name}/{split}/{arm_name}"
      shared = arm_name in ("off", "positive") or arm_name.startswith("cache ")
      if store.get(key) is None and not (shared and store.reuse(key)):
        start = time.time()
        store.put(key, task.score(model, arm_memory, rows, ratio_G), time.time() - start)
      bar.update()
      bar.set_postfix_str(f"{split} {arm_name}")
      return store.get(key)

    calibration = task.rows(model, "calibration", size)
    off_c = arm("calibration", "off", None, calibration)
    caches = {"cache " + ",".join(f"{k}={v}" for k, v in setting.items()):
              CacheConfig(window=CACHE_WINDOW, **setting) for setting in CACHE_GRID[size]}
    cache_scores = {k: arm("calibration", k, m, calibration) for k, m in caches.items()}
    tuned_cache = caches[best(task, cache_scores, off_c)]
    planned_sd = planned_sds(cache_scores, off_c)
    choices = grid_memories(memory, grid or {})
    chosen = memory
    if choices:
      scores = {k: arm("calibration", f"memory {k}", m, calibration) for k, m in choices.items()}
      chosen = choices[best(task, scores, off_c)]

    rows = task.rows(model, "evaluation", size)
    arms = {"off": arm("evaluation", "off", None, rows),
            "memory": arm("evaluation", "memory", chosen, rows)}
    size_G = realised(arms["memory"].produced_ratio)
    loop = getattr(chosen, "loop", "open")
    for direction in CONTROLS[size]:
      control = ControlConfig(direction=direction, loop=loop)
      arms[f"control:{direction}"] = arm("evaluation", f"control:{direction}", control, rows,
                                         size_G)
    arms["positive"] = arm("evaluation", "positive", tuned_cache, rows)
    bar.close()
    card[task_name] = _task_row(task, arms, planned_sd, chosen, tuned_cache, rows)
  result = Scorecard(model=model.spec, memory=name, memory_config=memory.to_dict(),
                     quick=quick, tasks=card, provenance=provenance(time.time() - t0),
                     arm_seconds=round(sum(store.seconds.values()), 1),
                     reused=dict(sorted(store.sources.items())))
  if out is not None:
    store.write_json("scorecard.json", dataclasses.asdict(result))
    store.write_text("scorecard.md", result.to_markdown() + "\n")
    store.write_figure("scorecard.png", scorecard_figure(result))
  return result


def _task(task):
  return TASKS[task] if isinstance(task, str) else task


def best(task, scores: dict[str, Measured], off: Measured) -> str:
  """The name whose mean change of the task's main metric from off is the best."""
  sign = 1.0 if task.higher_is_better else -1.0
  gain = {k: sign * float(np.mean(s.values[task.metric] - off.values[task.metric]))
          for k, s in scores.items()}
  return max(gain, key=gain.get)


def planned_sds(scores: dict[str, Measured], off: Measured) -> dict[str, float]:
  """Per metric: the median over `scores` of the SD of their per-cluster differences from off,
  the planned SD of every MDE of the task (docs/method.md, "Statistics policy")."""
  return {m: float(np.median([np.std(s.values[m] - off.values[m], ddof=1)
                              for s in scores.values()])) for m in off.values}


COMPARISONS = {"vs_off": ("memory", "off"), "vs_matched": ("memory", "control:average"),
               "vs_positive": ("memory", "positive"), "positive_vs_off": ("positive", "off")}


def _task_row(task, arms: dict[str, Measured], planned_sd: dict, chosen, tuned_cache,
              rows) -> dict:
  """The comparisons of one task (Holm over the family of its comparisons, per metric), the
  arms' realised sizes and the verdict."""
  pairs = {**COMPARISONS, **{f"{c}_vs_off": (c, "off") for c in arms if c.startswith("control:")}}
  comparisons = {k: {} for k in pairs}
  for metric in arms["off"].values:
    for key, (a, b) in pairs.items():
      comparisons[key][metric] = stats.cluster_comparison(
          arms[a].values[metric] - arms[b].values[metric], planned_sd=planned_sd[metric],
          family_size=len(pairs))
    adjusted = stats.holm([comparisons[k][metric]["p_value"] for k in pairs])
    for key, p in zip(pairs, adjusted):
      comparisons[key][metric]["p_holm"] = p
  return {"metric": task.metric, "better": "higher" if task.higher_is_better else "lower",
          "clusters": task.clusters(rows), "comparisons": comparisons,
          "planned_sd": planned_sd, "memory_config": chosen.to_dict(),
          "positive_config": tuned_cache.to_dict(),
          "realised_ratio": float(np.mean(arms["memory"].produced_ratio)),
          "realised_ratio_by_arm": {k: float(np.mean(a.produced_ratio)) for k, a in arms.items()},
          "memory_activity": {k: float(np.mean(v)) for k, v in arms["memory"].activity.items()},
          "verdict": verdict(task, comparisons)}


def verdict(task, comparisons: dict) -> str:
  """The task's answer in plain words (docs/method.md, "Attribution")."""
  metric = task.metric
  vs_off, vs_matched = comparisons["vs_off"][metric], comparisons["vs_matched"][metric]
  if not stats.detectable(vs_off):
    return f"no detectable change (MDE {mde_text(vs_off)})"
  sign = 1.0 if task.higher_is_better else -1.0
  direction = "gain" if sign * vs_off["mean_diff"] > 0 else "harm"
  if not stats.detectable(vs_matched):
    return f"{direction}: the size of the push, not the memory"
  if (sign * vs_matched["mean_diff"] > 0) == (direction == "gain"):
    return f"{direction} beyond a push of its size: the memory's own"
  return f"{direction}, less than a push of its size gives"
