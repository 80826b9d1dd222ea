"""The dose-response study, as a configuration of the suite: the attractor presets and their
controls over a grid of feedback sizes, open and closed loop.

    python -m experiments.dose --task kv|ppl|generation [--model M] [--policy new|old]
        [--ratios R ...] [--loops L ...] [--families F ...] [--quick] [--out FILE]
        [--reuse FILE] [--compare FILE]
        ->  results/dose_<task>_<model>.json (+ .png)

Tasks are the suite's (attractor_jax/suite/tasks.py), on its evaluation split:
  kv          Recall: 384 key-value items, an item a cluster.
  ppl         Perplexity as one 160-token window a cluster, 12 from each evaluation novel:
              the memory starts from the first 32 tokens, the 128 after them are scored, all
              inside the model's context (a mixture memory can only cost here).
  generation  Generation: 32 fact prompts, 256 sampled tokens with the loop closed, the
              question read with the carried memory.

Arms: the presets seed, gated and multiscale at each feedback ratio and loop; the controls
(moving average of x, prompt mean, random direction); the continuous cache (positive
control); the related-work memories at their presets. Two policies (docs/method.md,
"Statistics policy"):
  new  each preset arm's controls sized to its realised size per cluster (the suite's
       `realised`), "control:<direction>(<preset>)/<loop>/<ratio>"; the positive control the
       cache tuned on the calibration split over the suite's CACHE_GRID; every MDE from the
       planned SD (the median SD of that grid's differences from off) at alpha/m of its family.
  old  as the harness this replaced (experiments/dose_response.py, removed): controls at the
       nominal ratio, "control:<direction>/<loop>/<ratio>"; the cache preset as positive
       control; each MDE from its comparison's own SD. Kept to reproduce the earlier files.
Per table: every arm against off (Holm over the table's arms, per metric); every preset arm
against its average control ("vs_average") and against the positive control ("vs_cache"),
each a Holm family of its own under the new policy; the smallest ratio at which each family
harms detectably. Resumable: finished arms stay in the JSON. `--reuse` copies the arms no
policy changes (off, presets, related memories, the cache preset) from another file of the
same clusters; `--compare` records, per arm both hold, the largest per-cluster difference
from that file's values (a reproduction).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import time

import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.errors import InputError
from attractor_jax.results import git_commit, provenance, sources
from attractor_jax.suite.evaluate import CACHE_GRID, CACHE_WINDOW, best, planned_sds, realised
from attractor_jax.suite.tasks import PROMPT_LEN, Generation, Measured, Perplexity, Recall
from attractor_jax.writing import write_json_atomic

TASKS = {"kv": Recall(),
         "ppl": Perplexity(name="ppl", sizes={"quick": (2, 1, 160), "full": (12, 1, 160)},
                           unscored=PROMPT_LEN - 1, through=0.95),
         "generation": Generation(sizes={"quick": (4, 32), "full": (32, 256)})}
HARM_SIGN = {"kv": {"gold_logprob": -1.0, "accuracy": -1.0}, "ppl": {"nll": 1.0},
             "generation": {"seq_rep_4": 1.0, "carried_gold_logprob": -1.0,
                            "carried_accuracy": -1.0}}
RATIOS = (0.01, 0.03, 0.1, 0.3, 1.0)
PRESETS = ("seed", "gated", "multiscale")
CONTROLS = ("prompt", "average", "random")
LOOPS = ("open", "closed")
RELATED = ("hopfield", "steering", "fastweights", "dynamic-eval")
POLICIES = ("new", "old")
LOADED_COMMIT = git_commit()  # the commit this process's code came from: every arm records it


def grid(ratios, loops, policy: str) -> dict[str, object]:
  """The arms that need no other arm first, by name, a ratio's arms together (a run cut short
  has whole ratios); the new policy's sized controls and tuned cache are added as they can be."""
  out = {}
  for ratio in ratios:
    for loop in loops:
      for preset in PRESETS:
        out[f"{preset}/{loop}/{ratio}"] = dataclasses.replace(
            aj.presets[preset], feedback_ratio=ratio, loop=loop)
      if policy == "old":
        for direction in CONTROLS:
          out[f"control:{direction}/{loop}/{ratio}"] = aj.ControlConfig(
              direction=direction, feedback_ratio=ratio, loop=loop)
  if policy == "old":
    out["positive:cache"] = aj.presets["cache"]
  for name in RELATED:
    out[f"related:{name}"] = aj.presets[name]
  return out


def sized(task, size: str, clusters: int | None):
  """`task` with `clusters` in place of its cluster count at `size` (None: as it is)."""
  if clusters is None:
    return task
  design = task.sizes[size]
  design = (clusters, *design[1:]) if isinstance(design, tuple) else clusters
  return dataclasses.replace(task, sizes={**task.sizes, size: design})


def family(name: str) -> str:
  """"seed", "control:average", "positive:cache", ... (a sized control's preset dropped)."""
  return name.split("/")[0].split("(")[0]


class Study:
  """One task's table: its arms, kept in the JSON at `out` after each one."""

  def __init__(self, model, task_name: str, task, policy: str, size: str, out: pathlib.Path,
               reuse: pathlib.Path | None):
    self.model, self.task, self.policy, self.out = model, task, policy, out
    self.size = size
    self.rows = self.task.rows(model, "evaluation", size)
    self.design = {"task": task_name, "model": model.spec, "policy": policy,
                   "clusters": self.task.clusters(self.rows),
                   "sizes": json.loads(json.dumps(self.task.sizes[size]))}
    self.result = {"experiment": "dose-response", **self.design, "arms": {}, "calibration": {}}
    if out.exists():
      old = json.loads(out.read_text())
      if {k: old.get(k) for k in self.design} != self.design:
        raise InputError(f"--out {str(out)!r} holds another design: pass a new --out")
      print(f"resuming {out}")
      self.result.update(arms=old["arms"], calibration=old.get("calibration", {}))
    self.donor = {}
    if reuse is not None:
      if not reuse.is_file():
        raise InputError(f"--reuse {str(reuse)!r} is no file: pass a dose result file")
      donor = json.loads(reuse.read_text())
      if any(donor.get(k) != self.design[k] for k in ("task", "model", "clusters", "sizes")):
        raise InputError(f"--reuse {str(reuse)!r} ran other clusters: pass a file of this "
                         "task, model and size")
      self.donor = {k: dict(v, reused_from=str(reuse)) for k, v in donor["arms"].items()
                    if "produced_ratio" in v and "(" not in k}

  def arm(self, name: str, memory, ratio_G=None, split="evaluation") -> Measured:
    """The arm `name`: kept, reused (same memory), or run now and kept."""
    arms = self.result["arms"] if split == "evaluation" else self.result["calibration"]
    config = None if memory is None else json.loads(json.dumps(memory.to_dict()))
    donor = self.donor.get(name) if split == "evaluation" and ratio_G is None else None
    if name not in arms and donor is not None and donor.get("memory") == config:
      arms[name] = donor
    if name not in arms:
      rows = self.rows if split == "evaluation" else self.calibration_rows
      start = time.time()
      measured = self.task.score(self.model, memory, rows, ratio_G)
      arms[name] = _record(measured, config, time.time() - start, ratio_G)
      write_json_atomic(self.out, self.result)
      print(f"{split} {name}: " + ", ".join(f"{k} {np.mean(v):.5f}"
                                            for k, v in measured.values.items())
            + f" ({arms[name]['seconds']} s)", flush=True)
    return _measured(arms[name])

  @functools.cached_property
  def calibration_rows(self):
    return self.task.rows(self.model, "calibration", self.size)

  def run(self, memories: dict, controls: tuple[str, ...]):
    """off, every arm of `memories` and, under the new policy, each preset arm's sized
    controls and the tuned cache."""
    self.arm("off", None)
    for name, memory in memories.items():
      measured = self.arm(name, memory)
      if self.policy == "new" and family(name) in PRESETS:
        _, loop, ratio = name.split("/")
        for direction in controls:
          self.arm(f"control:{direction}({family(name)})/{loop}/{ratio}",
                   aj.ControlConfig(direction=direction, loop=loop),
                   realised(measured.produced_ratio))
    if self.policy == "new":
      caches = {",".join(f"{k}={v}" for k, v in s.items()):
                aj.CacheConfig(window=CACHE_WINDOW, **s) for s in CACHE_GRID[self.size]}
      off = self.arm("off", None, split="calibration")
      scored = {k: self.arm(f"cache {k}", m, split="calibration") for k, m in caches.items()}
      self.result["planned_sd"] = planned_sds(scored, off)
      self.arm("positive:cache", caches[best(self.task, scored, off)])


def _record(measured: Measured, config, seconds: float, ratio_G) -> dict:
  arm = {"values": {k: np.asarray(v, np.float64).tolist() for k, v in measured.values.items()},
         "produced_ratio": np.asarray(measured.produced_ratio, np.float64).tolist(),
         "seconds": round(seconds, 1), "git_commit": LOADED_COMMIT, "memory": config,
         "activity": {"feedback_ratio_mean": float(np.mean(measured.feedback_ratio)),
                      "produced_ratio_mean": float(np.mean(measured.produced_ratio)),
                      **{k: float(np.mean(v)) for k, v in measured.activity.items()}}}
  if ratio_G is not None:
    arm["imposed_ratio"] = np.asarray(ratio_G, np.float64).tolist()
  return arm


def _measured(arm: dict) -> Measured:
  return Measured({k: np.asarray(v) for k, v in arm["values"].items()},
                  np.asarray(arm.get("produced_ratio", [])), np.asarray([]))


def finalize(result: dict, harm_sign: dict[str, float]):
  """The table's comparisons (see the module docstring) and the first detectable harms."""
  arms = result["arms"]
  values = lambda name: {k: np.asarray(v) for k, v in arms[name]["values"].items()}
  planned = result.get("planned_sd") if result["policy"] == "new" else None
  references = {}  # (arm, key) -> reference arm
  for name in arms:
    if family(name) in PRESETS:
      _, loop, ratio = name.split("/")
      average = (f"control:average({family(name)})/{loop}/{ratio}" if planned is not None
                 else f"control:average/{loop}/{ratio}")
      references.update({(name, "vs_average"): average, (name, "vs_cache"): "positive:cache"})
  tests = {(name, "vs_off"): "off" for name in arms if name != "off"}
  tests.update({k: ref for k, ref in references.items() if ref in arms})
  for key in ("vs_off", "vs_average", "vs_cache"):
    members = [(name, ref) for (name, k), ref in tests.items() if k == key]
    for metric in arms["off"]["values"]:
      compared = [stats.cluster_comparison(
          values(name)[metric] - values(ref)[metric],
          planned_sd=None if planned is None else planned[metric],
          family_size=1 if planned is None else len(members)) for name, ref in members]
      adjusted = stats.holm([c["p_value"] for c in compared]) if compared else []
      for (name, _), c, p in zip(members, compared, adjusted):
        if key == "vs_off" or planned is not None:
          c["p_holm"] = p
        arms[name].setdefault(key, {})[metric] = c
  result["first_detectable_harm"] = {m: first_harm(result, m, s) for m, s in harm_sign.items()}


def first_harm(result: dict, metric: str, harm_sign: float) -> dict:
  """Per arm family (memory/loop): the smallest ratio whose Holm-adjusted test finds harm."""
  out = {}
  graded = [n for n in result["arms"] if n.count("/") == 2]
  for name in graded:
    family_, ratio = name.rsplit("/", 1)
    test = result["arms"][name]["vs_off"][metric]
    if test["p_holm"] < 0.05 and np.sign(test["mean_diff"]) == harm_sign:
      out[family_] = min(out.get(family_, np.inf), float(ratio))
  return {f: out.get(f) for f in sorted({n.rsplit("/", 1)[0] for n in graded})}


def reproduction(result: dict, other: pathlib.Path) -> dict:
  """Per arm both files hold with the same memory: the largest |per-cluster difference| of
  each metric, and both files' mean change from off."""
  theirs = json.loads(other.read_text())
  out = {}
  for name, arm in result["arms"].items():
    old = theirs["arms"].get(name)
    if old is None or old.get("memory") != arm["memory"]:
      continue
    shared = [m for m in arm["values"] if m in old["values"]]
    out[name] = {"max_abs_diff": {m: float(np.max(np.abs(np.subtract(arm["values"][m],
                                                                       old["values"][m]))))
                                  for m in shared}}
    if name != "off":
      out[name]["mean_diff"] = {m: [old["vs_off"][m]["mean_diff"], arm["vs_off"][m]["mean_diff"]]
                                for m in shared}
  return {"file": str(other), "its_commit": theirs.get("git_commit"), "arms": out}


def plot(result: dict, path: pathlib.Path, metric: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  arms = result["arms"]
  loops = [loop for loop in LOOPS if any(f"/{loop}/" in n for n in arms)]
  fig, axes = plt.subplots(1, len(loops), figsize=(5.5 * len(loops), 4), sharey=True,
                           squeeze=False)
  for ax, loop in zip(axes[0], loops):
    lines = sorted({n.rsplit("/", 2)[0] for n in arms if n.count("/") == 2})
    for line in lines:
      pts = [(a["activity"]["produced_ratio_mean"], a["vs_off"][metric])
             for n, a in arms.items() if n.startswith(f"{line}/{loop}/")]
      if not pts:
        continue
      x = np.asarray([p[0] for p in pts])
      y = np.asarray([p[1]["mean_diff"] for p in pts])
      ci = np.asarray([p[1]["t_ci95"] for p in pts])
      ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], marker="o", capsize=3, label=line,
                  linestyle="--" if line.startswith("control") else "-")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if metric == "nll":  # changes of 1e-3 nats and harms of 1 nat on one axis
      ax.set_yscale("symlog", linthresh=1e-3)
    ax.set(xscale="log", xlabel="realised |feedback made| / residual norm",
           title=f"{loop} loop")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  axes[0][0].set_ylabel(f"{metric}: arm - off (95% t CI)")
  fig.suptitle(f"{result['task']} on {result['model']} ({result['policy']} policy)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", choices=tuple(TASKS), required=True)
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--policy", choices=POLICIES, default="new")
  parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
  parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
  parser.add_argument("--families", nargs="+", default=None,
                      help="keep only these arm families (seed, control:average, "
                           "positive:cache, related:hopfield, ...)")
  parser.add_argument("--clusters", type=int, default=None,
                      help="windows per novel (ppl), items (kv) or prompts (generation)")
  parser.add_argument("--quick", action="store_true", help="tiny clusters: a smoke run")
  parser.add_argument("--out", default=None)
  parser.add_argument("--reuse", default=None, help="a dose file of the same clusters")
  parser.add_argument("--compare", default=None, help="a dose file to reproduce")
  args = parser.parse_args(argv)
  t0 = time.time()
  sources()
  size = "quick" if args.quick else "full"
  out = pathlib.Path(args.out or f"results/dose_{args.task}_{args.model}.json")
  memories = grid(args.ratios, args.loops, args.policy)
  controls = CONTROLS
  if args.families:
    memories = {k: v for k, v in memories.items() if family(k) in args.families}
    controls = tuple(c for c in CONTROLS if f"control:{c}" in args.families)
  try:
    study = Study(aj.load(args.model), args.task, sized(TASKS[args.task], size, args.clusters),
                  args.policy, size, out, args.reuse and pathlib.Path(args.reuse))
  except InputError as e:
    parser.exit(2, f"error: {e}\n")
  study.result.update(ratios=list(args.ratios), loops=list(args.loops))
  study.run(memories, controls)
  result = study.result
  finalize(result, HARM_SIGN[args.task])
  if args.compare:
    result["reproduction"] = reproduction(result, pathlib.Path(args.compare))
  result.update(provenance(time.time() - t0))
  write_json_atomic(out, result)
  for metric in HARM_SIGN[args.task]:
    plot(result, out.with_name(f"{out.stem}_{metric}.png"), metric)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
