"""The seed's headline failure tested head-on: long closed-loop generation, then recall.

    python -m experiments.headline [--model M] [--arms A ...] [--prompts 128] [--tokens 512]
        [--quick] [--out FILE]
        ->  results/headline_<model>.json
    python -m experiments.headline --summarize  ->  results/headline_scaling.{json,png}

The seed reported "~80% accuracy drop on ~500-token generation" and instability with "too
many attractors". Through the suite's Generation task (evaluation split): each of `--prompts`
fact prompts (a cluster) states a fact, the model samples `--tokens` tokens with the loop
closed (temperature 0.8, top-p 0.95), and the question is then read with the carried memory:
recall (the gold answer's first-token log-probability, accuracy over the choices), seq-rep-4,
distinct-2 and drift. Arms (all closed loop):
  off              no memory
  seed             the preset (K = 8, alpha 0.1): its own realised size
  seed/K64, K256   the preset with 64 and 256 attractors (the instability claim)
  seed/0.1 ...     the preset with its feedback scaled to 10%, 30%, 100% of the residual norm
and, beside each, "control:average(<arm>)": the moving average of the host layer's input with
no attractors, sized per cluster to the arm's realised feedback (the attribution rule of
docs/method.md: what the control also does is the feedback's size, not the attractors).
Every arm against off (Holm over the arms, per metric) and every attractor arm against its
control (a Holm family of its own); MDEs from each comparison's observed SD at the family's
first Holm step. Resumable: finished arms stay in the JSON (the dose study's `Study`).
`--summarize` reads every results/headline_*.json and writes the scaling table and plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

import attractor_jax as aj
from attractor_jax import stats
from attractor_jax.errors import InputError
from attractor_jax.results import provenance, sources
from attractor_jax.suite.evaluate import realised
from attractor_jax.suite.tasks import Generation
from attractor_jax.writing import write_json_atomic
from experiments.dose import Study

ARMS = {  # in the order they run: a run cut short has the most informative arms
    "seed": {},
    "seed/0.3": {"feedback_ratio": 0.3},
    "seed/1.0": {"feedback_ratio": 1.0},
    "seed/K256": {"num_attractors": 256},
    "seed/0.1": {"feedback_ratio": 0.1},
    "seed/K64": {"num_attractors": 64},
}
HARM_SIGN = {"carried_accuracy": -1.0, "carried_gold_logprob": -1.0, "seq_rep_4": 1.0,
             "distinct_2": -1.0, "drift": -1.0}
SUMMARY = pathlib.Path("results/headline_scaling.json")


def memory(arm: str) -> aj.AttractorConfig:
  return dataclasses.replace(aj.presets["seed"], loop="closed", **ARMS[arm])


def control_name(arm: str) -> str:
  return f"control:average({arm})"


def run(model_spec: str, arms: list[str], prompts: int, tokens: int, quick: bool,
        out: pathlib.Path) -> dict:
  size = "quick" if quick else "full"
  task = Generation(name="headline", sizes={"quick": (4, 32), "full": (prompts, tokens)})
  study = Study(aj.load(model_spec), "headline", task, "new", size, out, None)
  study.result.update(experiment="headline")
  study.arm("off", None)
  for arm in arms:
    measured = study.arm(arm, memory(arm))
    study.arm(control_name(arm), aj.ControlConfig(direction="average", loop="closed"),
              realised(measured.produced_ratio))
  return study.result


def finalize(result: dict):
  """vs_off for every arm, vs_control for every attractor arm: Holm within each family."""
  arms = result["arms"]
  values = lambda name, metric: np.asarray(arms[name]["values"][metric])
  families = {"vs_off": [(n, "off") for n in arms if n != "off"],
              "vs_control": [(n, control_name(n)) for n in arms
                             if n in ARMS and control_name(n) in arms]}
  for key, members in families.items():
    for metric in arms["off"]["values"]:
      compared = [stats.cluster_comparison(values(n, metric) - values(ref, metric),
                                           family_size=len(members)) for n, ref in members]
      for (name, _), c, p in zip(members, compared,
                                 stats.holm([c["p_value"] for c in compared])):
        arms[name].setdefault(key, {})[metric] = {**c, "p_holm": p}
  off_accuracy = float(np.mean(values("off", "carried_accuracy")))
  result["headroom"] = {"off_accuracy": off_accuracy, "in_60_90": 0.6 <= off_accuracy <= 0.9}
  result["relative_accuracy_change"] = {
      n: a["vs_off"]["carried_accuracy"]["mean_diff"] / off_accuracy
      for n, a in arms.items() if n != "off" and off_accuracy > 0}
  result["first_detectable_harm"] = {m: first_harm(result, m, s) for m, s in HARM_SIGN.items()}
  result["arm_seconds"] = round(sum(a["seconds"] for a in arms.values()), 1)  # over resumes


def first_harm(result: dict, metric: str, sign: float) -> dict:
  """The smallest realised ratio at which the seed (any arm of ARMS) or its control harms
  `metric` detectably (Holm p < 0.05 against off), each; None when none does."""
  out = {"seed": None, "control:average": None}
  for name, arm in result["arms"].items():
    test = arm.get("vs_off", {}).get(metric)
    if test is None or test["p_holm"] >= 0.05 or np.sign(test["mean_diff"]) != sign:
      continue
    kind = "seed" if name in ARMS else "control:average"
    ratio = arm["activity"]["produced_ratio_mean"] if kind == "seed" else float(
        np.mean(arm["imposed_ratio"]))
    out[kind] = ratio if out[kind] is None else min(out[kind], ratio)
  return out


def summarize(files: list[pathlib.Path]) -> dict:
  """Per model: headroom, each arm's realised size, recall change vs off and vs its control
  with CIs and MDEs, the relative accuracy change, the first detectable harm."""
  models = {}
  for path in files:
    r = json.loads(path.read_text())
    if "headroom" not in r:
      continue
    rows = {}
    for name in ARMS:
      arm = r["arms"].get(name)
      if arm is None:
        continue
      row = {"realised_ratio": arm["activity"]["produced_ratio_mean"],
             "relative_accuracy_change": r["relative_accuracy_change"].get(name)}
      for key in ("vs_off", "vs_control"):
        for metric in ("carried_accuracy", "seq_rep_4"):
          c = arm.get(key, {}).get(metric)
          if c is not None:
            row[f"{key}:{metric}"] = {k: c[k] for k in ("mean_diff", "t_ci95", "mde", "p_holm")}
      rows[name] = row
    models[r["model"]] = {"file": str(path), "clusters": r["clusters"], "sizes": r["sizes"],
                          "git_commit": r.get("git_commit"), "headroom": r["headroom"],
                          "arm_seconds": r["arm_seconds"],
                          "arms": rows, "first_detectable_harm": r["first_detectable_harm"]}
  return {"experiment": "headline scaling", "models": models}


def plot(summary: dict, path: pathlib.Path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for model, m in summary["models"].items():
    for ax, key in zip(axes, ("vs_off", "vs_control")):
      pts = sorted((row["realised_ratio"], row[f"{key}:carried_accuracy"])
                   for row in m["arms"].values() if f"{key}:carried_accuracy" in row)
      if not pts:
        continue
      x = np.asarray([p[0] for p in pts])
      y = np.asarray([p[1]["mean_diff"] for p in pts])
      ci = np.asarray([p[1]["t_ci95"] for p in pts])
      ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], marker="o", capsize=3,
                  label=f"{model} (off {m['headroom']['off_accuracy']:.0%})")
  for ax, title in zip(axes, ("seed arm - off", "seed arm - its sized average control")):
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xscale="log", xlabel="realised |feedback| / residual norm", title=title)
  axes[0].set_ylabel("recall accuracy after the continuation (95% t CI)")
  axes[0].legend(fontsize=7)
  fig.suptitle("Recall after long closed-loop generation, across model sizes")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(ARMS))
  parser.add_argument("--prompts", type=int, default=128)
  parser.add_argument("--tokens", type=int, default=512)
  parser.add_argument("--quick", action="store_true", help="4 prompts x 32 tokens: a smoke run")
  parser.add_argument("--out", default=None)
  parser.add_argument("--summarize", action="store_true",
                      help="write results/headline_scaling.{json,png} from the model files")
  args = parser.parse_args(argv)
  if args.summarize:
    files = sorted(p for p in SUMMARY.parent.glob("headline_*.json") if p != SUMMARY)
    summary = summarize(files)
    write_json_atomic(SUMMARY, summary)
    plot(summary, SUMMARY.with_suffix(".png"))
    print(f"wrote {SUMMARY}")
    return
  t0 = time.time()
  sources()
  out = pathlib.Path(args.out or f"results/headline_{args.model}.json")
  try:
    result = run(args.model, args.arms, args.prompts, args.tokens, args.quick, out)
  except InputError as e:
    parser.exit(2, f"error: {e}\n")
  finalize(result)
  result.update(provenance(time.time() - t0))
  write_json_atomic(out, result)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
