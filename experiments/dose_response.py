"""Dose-response of the attractor layer and its equal-norm controls, open and closed loop.

    python -m experiments.dose_response --task ppl [--model gemma3-270m] [--quick]
        ->  results/dose_<task>_<model>.json (+ .png)

Arms: presets seed, gated and multiscale with their feedback set to a fraction of the host
layer's residual norm (`feedback_ratio`), and three controls of the same size
(`ControlConfig`: the prompt's mean attention output, a moving average of x, a random
direction); each in the open loop (feedback after the host layer's attention) and the closed
loop (before it); fractions RATIOS. The continuous cache is the positive control, and the
other related-work memories run at their presets on the same clusters (E7, one commit). Every row is read token by token under teacher forcing
(`forcing.teacher_forced`: one pass per token as in generation, so burn-in and gates count
tokens), each cluster with a fresh memory; `off` is the same computation without a memory.

Tasks (clusters are independent; each is scored once per arm, seed = its index):
  ppl  windows of EVAL_NOVELS (none from the novels calibration uses): a 32-token prompt,
       then 128 scored tokens; per window the mean NLL of the scored tokens.
  kv   key-value recall with KV_PAIRS pairs right before the question (off right on about 60%
       of items: headroom both ways), one row per item (prompt + gold answer); per item the gold answer's
       log-probability and whether the gold's first token outscores the other choices' first
       tokens at the answer position (`teacher_forced` candidates: the 24 values' first tokens
       are distinct on both models, and one token long on Gemma and for 20 of 24 on SmolLM2).

Every arm's difference from `off` over clusters: mean, t and BCa intervals, p-value, Holm over
the task's table, minimum detectable effect at 80% power; and what the memory did: realised
|feedback| / residual norm (mean, 95th percentile), gate openness (share of passes with
the gate open: `attractor.gate_open`), max similarity quantiles, the winner's share of
strength, cos(feedback, mean x).
Resumable: finished arms are kept in the JSON (written after each arm) and skipped on rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.attractor import gate_open, winner_share
from attractor_jax.data import load_text
from attractor_jax import forcing
from attractor_jax.prompts import bos, text_ids
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.seeds import stacked_keys
from attractor_jax.suite.clusters import (KV_PROMPT_LEN, KV_SEEDS, NOVELS, kv_metrics, kv_rows)
from attractor_jax.writing import write_json_atomic

EVAL_NOVELS, CALIBRATION_NOVELS = NOVELS["evaluation"], NOVELS["calibration"]
RATIOS = (0.01, 0.03, 0.1, 0.3, 1.0)
PRESETS = ("seed", "gated", "multiscale")
CONTROLS = ("prompt", "average", "random")
LOOPS = ("open", "closed")
RELATED = ("hopfield", "steering", "fastweights", "dynamic-eval")
PROMPT_LEN, SCORED = 32, 128
KV_ITEMS = 384
LOADED_COMMIT = git_commit()  # the commit this process's code came from: every arm records it
MAIN_METRIC = {"ppl": ("nll", -1.0), "kv": ("gold_logprob", 1.0)}  # metric, sign of a gain


def arms(ratios=RATIOS) -> dict[str, aj.Memory]:
  """Every arm by name, "<preset or control:direction>/<loop>/<ratio>"."""
  out = {}
  for ratio in ratios:  # a ratio's arms together: a run cut short has whole ratios
    for loop in LOOPS:
      for name in PRESETS:
        out[f"{name}/{loop}/{ratio}"] = dataclasses.replace(
            aj.presets[name], feedback_ratio=ratio, loop=loop)
      for direction in CONTROLS:
        out[f"control:{direction}/{loop}/{ratio}"] = aj.ControlConfig(
            direction=direction, feedback_ratio=ratio, loop=loop)
  # the positive control: the continuous cache (related work that works), at its preset;
  # the other related-work memories at theirs (E7 on the same clusters)
  out["positive:cache"] = aj.presets["cache"]
  for name in RELATED:
    out[f"related:{name}"] = aj.presets[name]
  return out


def ppl_rows(model, per_novel: int, novels=EVAL_NOVELS) -> tuple[np.ndarray, list[str]]:
  """`per_novel` windows from each of `novels`, evenly spaced through it (each starting at a
  paragraph): [R, PROMPT_LEN + SCORED] token ids, and each window's novel."""
  length = PROMPT_LEN + SCORED
  rows, names = [], []
  for novel in novels:
    text = load_text(novel)
    for start in np.linspace(0.05, 0.95, per_novel) * len(text):
      paragraph = text.index("\n\n", int(start)) + 2
      ids = bos(model) + text_ids(model, text[paragraph:paragraph + 8 * length])
      rows.append(ids[:length])
      names.append(novel)
  return np.asarray(rows, np.int32), names


def ppl_metrics(nll_RxT: np.ndarray) -> dict[str, np.ndarray]:
  """Per window: the mean NLL of its scored tokens."""
  return {"nll": nll_RxT[:, PROMPT_LEN - 1:].mean(axis=1)}


def read_rows(model, name: str, memory, tokens_RxL: np.ndarray, candidates=None,
              prompt_len: int = PROMPT_LEN) -> aj.Forced:
  """Every row read token by token with `memory` (row r's memory seeded by r); stops the run
  on a NaN or Inf, naming the arm."""
  keys, _ = stacked_keys(range(tokens_RxL.shape[0]))
  forced = forcing.teacher_forced(model.engine(memory), model.params, jnp.asarray(tokens_RxL), keys,
                                               candidates, prompt_len=prompt_len)
  if not bool(np.all(forced.finite)):
    raise SystemExit(f"{name}: NaN or Inf in a pass")
  return forced


def scored_passes(task: str, rows: np.ndarray, spans) -> np.ndarray:
  """[R, L] True for the passes whose feedback the scored tokens saw."""
  mask = np.zeros(rows.shape, bool)
  if task == "ppl":
    mask[:, PROMPT_LEN - 1:-1] = True
  else:
    for r, (s, n) in enumerate(spans):
      mask[r, s - 1:s - 1 + n] = True
  return mask


def activity(memory, forced, mask_RxL: np.ndarray) -> dict:
  """What the memory did over the scored passes."""
  ratio = np.asarray(forced.feedback_ratio)[mask_RxL]
  out = {"feedback_ratio_mean": float(ratio.mean()),
         "feedback_ratio_p95": float(np.percentile(ratio, 95))}
  if isinstance(memory, aj.AttractorConfig):
    info = forced.info
    gate = np.asarray(info.gate)[mask_RxL]  # [P, N]
    sim = np.asarray(info.max_sim)[mask_RxL]
    share = np.asarray(winner_share(info.strength))[mask_RxL]
    out.update(gate_open=float(gate_open(gate).mean()),
               max_sim_quantiles=np.quantile(sim, [0.05, 0.5, 0.95]).tolist(),
               winner_share=float(share.mean()),
               steering_cos=float(np.asarray(info.steering_cos)[mask_RxL].mean()))
  return out


def compare(values: dict[str, np.ndarray], baseline: dict[str, np.ndarray]) -> dict:
  return {metric: stats.cluster_comparison(values[metric] - baseline[metric])
          for metric in values}


def finished_arms(out: pathlib.Path, design: dict, grid: dict) -> dict:
  """The arms an earlier run of the same design left in `out` that `grid` still has."""
  if not out.exists():
    return {}
  old = json.loads(out.read_text())
  if {k: old.get(k) for k in design} != design:
    return {}
  print(f"resuming {out}")
  return {k: v for k, v in old["arms"].items() if k == "off" or k in grid}


def record(result: dict, name: str, memory, values: dict[str, np.ndarray], activity_of,
           seconds: float):
  """Adds one arm to `result`: its per-cluster values and, for a memory, `activity_of()` and
  its difference from off (recorded first)."""
  arm = {"values": {k: np.asarray(v, np.float64).tolist() for k, v in values.items()},
         "seconds": round(seconds, 1), "git_commit": LOADED_COMMIT}
  if memory is None:
    arm["summary"] = {k: float(np.mean(v)) for k, v in values.items()}
  else:
    off = {k: np.asarray(v) for k, v in result["arms"]["off"]["values"].items()}
    arm.update(memory=memory.to_dict(), activity=activity_of(), vs_off=compare(values, off))
  result["arms"][name] = arm
  shown = arm.get("summary") or {k: round(v["mean_diff"], 5) for k, v in arm["vs_off"].items()}
  print(f"{name}: {shown} ({arm['seconds']} s)", flush=True)


def add_holm(result: dict):
  """Holm-adjusted p-values over every arm of the table, per metric."""
  arms_done = [a for a in result["arms"] if a != "off"]
  for metric in result["arms"]["off"]["values"]:
    p = [result["arms"][a]["vs_off"][metric]["p_value"] for a in arms_done]
    for a, adjusted in zip(arms_done, stats.holm(p) if p else []):
      result["arms"][a]["vs_off"][metric]["p_holm"] = adjusted


def versus_references(result: dict):
  """Each attractor arm paired with the moving-average control of its loop and ratio (same
  size, no attractors) and with the positive control (the cache), per metric."""
  arms_ = result["arms"]
  values = lambda name: {k: np.asarray(v) for k, v in arms_[name]["values"].items()}
  for name, arm in arms_.items():
    if name.count("/") != 2 or name.startswith("control:"):
      continue
    _, loop, ratio = name.split("/")
    for key, ref in (("vs_average", f"control:average/{loop}/{ratio}"),
                     ("vs_cache", "positive:cache")):
      if ref in arms_:
        arm[key] = compare(values(name), values(ref))


def finalize(result: dict, harms: dict[str, float]):
  """Holm over the table, the comparisons with the controls, the first detectable harm of
  each metric in `harms` (metric -> the sign of harm), and where and on what it ran."""
  add_holm(result)
  versus_references(result)
  result["first_detectable_harm"] = {m: first_harm(result, m, s) for m, s in harms.items()}
  result.update(git_commit=git_commit(), machine=machine_info(), sources=sources(),
                device=str(jax.devices()[0].device_kind))


def first_harm(result: dict, metric: str, harm_sign: float) -> dict:
  """Per arm family (memory/loop): the smallest ratio whose Holm-adjusted test finds harm."""
  out = {}
  graded = [n for n in result["arms"] if n.count("/") == 2]
  for name in graded:
    arm = result["arms"][name]
    family, ratio = name.rsplit("/", 1)
    test = arm["vs_off"][metric]
    if test["p_holm"] < 0.05 and np.sign(test["mean_diff"]) == harm_sign:
      out[family] = min(out.get(family, np.inf), float(ratio))
  return {f: out.get(f) for f in sorted({n.rsplit("/", 1)[0] for n in graded})}


def plot(result: dict, path: pathlib.Path, metric: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  loops = [loop for loop in LOOPS if any(f"/{loop}/" in n for n in result["arms"])]
  fig, axes = plt.subplots(1, len(loops), figsize=(5.5 * len(loops), 4), sharey=True,
                           squeeze=False)
  axes = axes[0]
  for ax, loop in zip(axes, loops):
    for family in PRESETS + tuple(f"control:{c}" for c in CONTROLS):
      pts = [(a["activity"]["feedback_ratio_mean"], a["vs_off"][metric])
             for n, a in result["arms"].items() if n.startswith(f"{family}/{loop}/")]
      if not pts:
        continue
      x = np.asarray([p[0] for p in pts])
      y = np.asarray([p[1]["mean_diff"] for p in pts])
      ci = np.asarray([p[1]["t_ci95"] for p in pts])
      ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], marker="o", capsize=3,
                  label=family, linestyle="--" if family.startswith("control") else "-")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if metric == "nll":  # changes of 1e-3 nats and harms of 1 nat on one axis
      ax.set_yscale("symlog", linthresh=1e-3)
    ax.set(xscale="log", xlabel="realised |feedback| / residual norm", title=f"{loop} loop")
  axes[0].set_ylabel(f"{metric}: arm - off (95% t CI)")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(f"{result['task']} on {result['model']}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", choices=("ppl", "kv"), required=True)
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--clusters", type=int, default=None,
                      help=f"windows per novel (ppl, default 12) or items (kv, {KV_ITEMS})")
  parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
  parser.add_argument("--quick", action="store_true", help="tiny grid: a smoke run")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or f"results/dose_{args.task}_{args.model}.json")
  model = aj.load(args.model)
  ratios = (0.1,) if args.quick else tuple(args.ratios)
  grid = arms(ratios)
  if args.quick:
    grid = {k: v for k, v in grid.items()
            if k.split("/")[0] in ("gated", "control:average", "positive:cache")}
  if args.task == "ppl":
    rows, clusters = ppl_rows(model, args.clusters or (2 if args.quick else 12))
    spans, candidates, prompt_len = None, None, PROMPT_LEN
    metrics = lambda forced: ppl_metrics(np.asarray(forced.nll, np.float64))
  else:
    kv = kv_rows(model, args.clusters or (8 if args.quick else KV_ITEMS),
                 seed=KV_SEEDS["evaluation"])
    rows, spans, candidates, prompt_len = kv.tokens, kv.spans, kv.candidates, KV_PROMPT_LEN
    clusters = [f"item {i}" for i in range(len(rows))]
    metrics = lambda forced: kv_metrics(np.asarray(forced.nll, np.float64),
                                        np.asarray(forced.candidate_logprob), kv)
  design = {"task": args.task, "model": args.model, "rows": list(rows.shape),
            "clusters": len(clusters), "prompt_len": prompt_len,
            "eval_novels": list(EVAL_NOVELS) if args.task == "ppl" else None}
  result = {"experiment": "dose-response", **design, "ratios": list(ratios),
            "arm_names": sorted(grid), "cluster_names": clusters, "arms": {}}
  result["arms"] = finished_arms(out, design, grid)
  mask = scored_passes(args.task, rows, spans)
  for name, memory in [("off", None), *grid.items()]:
    if name in result["arms"]:
      continue
    t0 = time.time()
    forced = read_rows(model, name, memory, rows, candidates, prompt_len)
    record(result, name, memory, metrics(forced),
           lambda: activity(memory, forced, mask), time.time() - t0)
    write_json_atomic(out, result)
  metric, gain = MAIN_METRIC[args.task]
  finalize(result, {metric: -gain} if args.task == "ppl" else {metric: -gain, "accuracy": -1.0})
  write_json_atomic(out, result)
  plot(result, out.with_suffix(".png"), metric)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
