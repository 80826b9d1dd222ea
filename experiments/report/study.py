"""The dose-response study (results/dose_*.json): tables per task and model, and the answers
to the seed's four questions, every number read from those files."""

from __future__ import annotations

import collections
import statistics

from experiments.report.experiments import e4_files
from experiments.report.format import ci_text

TASKS = {"ppl": ("nll", "NLL per scored token (nats)", "lower is better"),
         "kv": ("gold_logprob", "gold answer log-prob", "higher is better"),
         "generation": ("seq_rep_4", "seq-rep-4 of the continuation", "lower is better")}
EXTRA = {"kv": ("accuracy",), "generation": ("carried_accuracy", "carried_gold_logprob",
                                            "fresh_accuracy")}


def studies(res: dict) -> dict[str, dict]:
  """The finished dose-response results by file stem (a run still going has no Holm yet)."""
  return {k: v for k, v in sorted(res.items())
          if k.startswith("dose_") and "first_detectable_harm" in v}


def _cell(test: dict, scale: float = 1.0, fmt: str = "{:+.4f}") -> str:
  text = (f"{fmt.format(scale * test['mean_diff'])} "
          f"{ci_text([scale * c for c in test['t_ci95']], fmt)}")
  return f"**{text}**" if test.get("p_holm", 1.0) < 0.05 else text


def _activity(arm: dict) -> str:
  a = arm.get("activity", {})
  if "feedback_ratio_mean" not in a:
    return "-"
  text = f"{a['feedback_ratio_mean']:.3f} / {a['feedback_ratio_p95']:.3f}"
  if "gate_open" in a:
    text += f"; gate {a['gate_open']:.2f}; cos {a['steering_cos']:.2f}"
  return text


def table(study: dict) -> list[str]:
  """One row per arm: realised size and activity, the main metric's difference from off."""
  metric, label, better = TASKS[study["task"]]
  extra = EXTRA.get(study["task"], ())
  lines = ["| " + " | ".join(["arm", "realised ratio mean / p95; gate open; steering cos",
                               f"{metric} vs off [95% t CI]", "BCa CI", "p (Holm)", "MDE",
                               *(f"{m} vs off" for m in extra)]) + " |",
           "|---" * (6 + len(extra)) + "|"]
  for name, arm in study["arms"].items():
    if name == "off":
      continue
    test = arm["vs_off"][metric]
    cells = [name, _activity(arm), _cell(test), ci_text(test["bca_ci95"], "{:+.4f}"),
             f"{test['p_holm']:.3g}", f"{test['mde']:.4f}"]
    cells += [_cell(arm["vs_off"][m], 100, "{:+.1f}") if "accuracy" in m
              else _cell(arm["vs_off"][m]) for m in extra]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def study_section(res: dict) -> list[str]:
  found = studies(res)
  if not found:
    return []
  lines = ["## The seed's four questions, answered by the dose-response study", "",
           *(f"{a}\n" for a in answers(res)),
           "## The dose-response study", "",
           "Arms at a feedback size relative to the host layer's residual norm (the number at "
           "the end of an arm's name), open and closed loop, with equal-norm controls and the "
           "continuous cache as a positive control; clusters read token by token, paired with "
           "off (docs/method.md, section 11). Bold: Holm-adjusted p < 0.05 over the table. "
           "Accuracy differences in points. MDE: the minimum detectable effect at 80% power.", ""]
  for stem, s in found.items():
    metric, label, better = TASKS[s["task"]]
    off = s["arms"]["off"]["summary"]
    command = (f"python -m experiments.dose --task {s['task']} --policy {s.get('policy', 'old')}"
               f" --ratios {' '.join(map(str, s['ratios']))}"
               + (f" --loops {' '.join(s['loops'])}" if s.get("loops") else "")
               # the ppl task's windows: 12 per evaluation novel unless the file ran fewer
               + (f" --clusters {s['clusters'] // 3}" if s["task"] == "ppl" and s["clusters"] != 36
                  else ""))
    lines += [f"### {s['task']} on {s['model']}", "",
              f"`{command} --model {s['model']}`: {s['clusters']} clusters, {_commits(s)}, "
              f"{s['machine']['cpus']} CPUs ({s['device']}). off: "
              + ", ".join(f"{k} {v:.4f}" for k, v in off.items()) + f". {label}: {better}.", "",
              *table(s), "", f"![{stem}](results/{stem}"
              f"{'_seq_rep_4' if s['task'] == 'generation' else ''}.png)", ""]
  return lines


def _commits(study: dict) -> str:
  """The commit the arms ran at, or each commit with its number of arms when several did
  (arms written before arms were stamped are counted apart)."""
  stamped = collections.Counter(a["git_commit"][:7] for a in study["arms"].values()
                                if "git_commit" in a)
  unstamped = len(study["arms"]) - sum(stamped.values())
  if not stamped:
    return f"git {study['git_commit'][:7]} (the file's last run; its arms are not stamped)"
  if len(stamped) == 1 and not unstamped:
    return f"git {next(iter(stamped))}"
  return ("arms at git " + ", ".join(f"{c} ({n})" for c, n in stamped.items())
          + (f" and {unstamped} unstamped" if unstamped else ""))


def recall_rows(res: dict) -> list[str]:
  """E3's accuracy claim, from the study's generation files: fact recall with the memory the
  continuation left, per model, and the attractor arms that moved it detectably."""
  rows = []
  for s in studies(res).values():
    if s["task"] != "generation":
      continue
    arms = dict(_attractor_arms(s))
    if not arms:
      continue
    tests = {n: a["vs_off"]["carried_accuracy"] for n, a in arms.items()}
    moved = [f"{n} {_cell(t, 100, '{:+.1f}')}" for n, t in tests.items() if _significant(t)]
    mde = [100 * t["mde"] for t in tests.values()]
    gates = sorted({f"{100 * a['activity']['gate_open']:.0f}" for n, a in arms.items()
                    if "gate_open" in a.get("activity", {}) and n.startswith("gated/")},
                   key=float)
    gate_range = gates[0] if len(gates) == 1 else "-".join(gates[::len(gates) - 1])
    rows.append(
        f"fact recall after {s['tokens']} generated tokens, the memory carried into the "
        f"question ({s['model']}, {s['clusters']} prompts): off "
        f"{100 * s['arms']['off']['summary']['carried_accuracy']:.1f}%; {len(moved)} of "
        f"{len(arms)} attractor arms change it detectably (Holm)"
        + (f": {', '.join(moved)}" if moved else
           f" (MDE {min(mde):.1f} to {max(mde):.1f} points)")
        + (f"; gated's gate open on {gate_range}% of passes" if gates else ""))
  return rows


PRESETS = ("seed", "gated", "multiscale")
PRIOR_WORK = (
    "activation steering (ActAdd, Turner et al. 2023), which adds a fixed direction to the "
    "residual stream; the continuous cache (Grave et al. 2017) and kNN-LM (Khandelwal et al. "
    "2020), which mix a distribution over past next tokens into the output; memorizing "
    "transformers (Wu et al. 2022), which attend over stored keys and values; fast-weight "
    "programmers and linear attention (Schlag et al. 2021, Katharopoulos et al. 2020), which "
    "bind keys to values in an outer-product memory; dynamic evaluation and test-time training "
    "(Krause et al. 2018, Sun et al. 2020), which take gradient steps at inference; and modern "
    "Hopfield layers (Ramsauer et al. 2021), whose retrieval is the attractor's softmax read-out")


def _attractor_arms(study: dict):
  for name, arm in study["arms"].items():
    if name.count("/") == 2 and name.split("/")[0] in PRESETS:
      yield name, arm


def _significant(test: dict) -> bool:
  return test.get("p_holm", 1.0) < 0.05


def _where(study: dict) -> str:
  return f"{study['task']} on {study['model']}"


def _better_sign(task: str) -> float:
  return -1.0 if task in ("ppl", "generation") else 1.0


def _side(test: dict, sign: float) -> bool:
  """The 95% t interval lies wholly on the `sign` side of 0."""
  return test["t_ci95"][0] > 0 if sign > 0 else test["t_ci95"][1] < 0


def _lowest_ratio(names: list[str]) -> str:
  return min((n.rsplit("/", 1)[1] for n in names), key=float, default="-")


def _kv_limits(study: dict) -> str:
  """Key-value recall: which attractor arms raise the gold answer's log-prob or accuracy, and
  whether the same-size moving average of x (no attractors) does as well."""
  arms = dict(_attractor_arms(study))
  gains = lambda m: [n for n, a in arms.items() if _significant(a["vs_off"][m])
                     and _side(a["vs_off"][m], 1.0)]
  logprob, accuracy = gains("gold_logprob"), gains("accuracy")
  beaten = [n for n in logprob if "vs_average" in arms[n]
            and _side(arms[n]["vs_average"]["gold_logprob"], 1.0)]
  text = (f"Key-value recall ({study['model']}, off "
          f"{100 * study['arms']['off']['summary']['accuracy']:.1f}% correct): "
          f"{len(logprob)} of {len(arms)} attractor arms raise the gold answer's log-probability "
          f"detectably ({', '.join(logprob) or 'none'}), {len(beaten)} of them by more than the "
          "moving average of x of the same size")
  if beaten:
    text += " (" + ", ".join(beaten) + ")"
  text += (f"; {len(accuracy)} raise accuracy detectably, the test of picking the bound value "
           "over the other one in the context")
  if accuracy:
    return text + " (" + ", ".join(accuracy) + "). "
  return text + ", as expected of a memory with no key-value binding. "


def _versus_tuned_cache(study: dict, positive: dict) -> str:
  """The tuned cache's gain on the study's own evaluation clusters beside the layer's best."""
  tuned = positive.get("tasks", {}).get(study["task"])
  if not tuned or "git_commit" not in positive:
    return ""
  metric, sign = TASKS[study["task"]][0], _better_sign(study["task"])
  best_name, best = max(((n, a["vs_off"][metric]) for n, a in _attractor_arms(study)),
                        key=lambda item: sign * item[1]["mean_diff"])
  return (f"Tuned on calibration clusters, the cache changes {metric} on these same evaluation "
          f"clusters by {_cell(tuned['evaluation'][metric])}; the layer's best arm, {best_name}, "
          f"by {_cell(best)}. ")


SEED_GAIN = 3.3  # points: the seed's reported gain with gating and burn-in


def _headroom(study: dict) -> str:
  """Where the task scores accuracy: off's score, the accuracy MDEs in points, and the
  attractor arms whose design could detect the seed's +3.3 points."""
  if "accuracy" not in study["arms"]["off"]["summary"]:
    return ""
  mdes = [100 * a["vs_off"]["accuracy"]["mde"] for n, a in study["arms"].items()
          if n != "off" and a["vs_off"]["accuracy"]["sd"] > 0]  # sd 0: no answer changed
  attractor = dict(_attractor_arms(study))
  within = sorted((n for n, a in attractor.items()
                   if a["vs_off"]["accuracy"]["sd"] > 0
                   and 100 * a["vs_off"]["accuracy"]["mde"] <= SEED_GAIN),
                  key=lambda n: (float(n.rsplit("/", 1)[1]), n))
  return (f"; off {100 * study['arms']['off']['summary']['accuracy']:.1f}% correct, accuracy "
          f"MDE {min(mdes):.1f} to {max(mdes):.1f} points (median {statistics.median(mdes):.1f}) "
          f"over the arms that changed any answer; the accuracy MDE of {len(within)} of "
          f"{len(attractor)} attractor arms is at most the seed's +{SEED_GAIN} points"
          + (f" ({', '.join(within)})" if within else ""))


def _comprehension(res: dict) -> str:
  """E4 on each model, the seed's presets as specified: off's accuracy, the presets' accuracy
  MDEs against the seed's +3.3 points, and which presets moved accuracy or the gold log-prob."""
  parts = []
  for model, r in e4_files(res).items():
    tests = r["paired_vs_off"]
    mdes = [100 * t["accuracy"]["mde"] for t in tests.values() if t["accuracy"].get("mde")]
    if not mdes:
      continue
    moved = lambda m: [p for p, t in tests.items() if t[m].get("p_holm", 1.0) < 0.05]
    parts.append(f"{model}: off {100 * r['summary']['off']['accuracy']['mean']:.1f}% over "
                 f"{r['n_stories']} stories, accuracy MDE {min(mdes):.1f} to {max(mdes):.1f} "
                 f"points ({'at most' if max(mdes) <= SEED_GAIN else 'not all within'} the "
                 f"seed's +{SEED_GAIN}); accuracy moved (Holm) in "
                 f"{', '.join(moved('accuracy')) or 'no preset'}, the right answer's "
                 f"log-likelihood in {', '.join(moved('gold_logprob')) or 'no preset'}")
  if not parts:
    return ""
  return ("Comprehension with headroom (E4, the seed's presets as specified, stories read token "
          "by token): " + "; ".join(parts) + ". ")


def _recommendation(found: list[dict], res: dict) -> str:
  """The minimal suite these files support: the tasks where the tuned cache's gain was
  detectable or where at least half the attractor arms changed one of the task's metrics
  detectably, with the number of arms each task moved, per model."""
  moved = {}
  for s in found:
    metrics = (TASKS[s["task"]][0], *EXTRA.get(s["task"], ()))
    arms = [a["vs_off"] for _, a in _attractor_arms(s)]
    hit = sum(any(_significant(t[m]) for m in metrics if m in t) for t in arms)
    moved.setdefault(s["task"], []).append((s["model"], hit, len(arms)))
  positive = {gain.split()[0] for stem, p in res.items()
              if stem.startswith("dose_positive_") and "git_commit" in p
              for gain in _tuned_gains(p)}
  keep = [task for task, counts in moved.items()
          if task in positive or any(n and 2 * k >= n for _, k, n in counts)]
  shares = "; ".join(f"{task} " + ", ".join(f"{k} of {n} on {m}" for m, k, n in counts)
                     for task, counts in moved.items())
  return (f"Attractor arms that changed any of the task's metrics detectably (Holm): {shares}. The "
          f"minimal suite these figures support: {', '.join(keep) if keep else 'none of these'} "
          "(a task where the tuned cache gained detectably, or where at least half its "
          "attractor arms moved a metric), read token by token over >= "
          f"{min(s['clusters'] for s in found)} "
          "clusters, paired with off, beside the equal-norm moving average of x (which "
          "separates an attractor from a steering vector) and the tuned cache (which shows the "
          "task can see a working memory)" + (
              f"; {', '.join(sorted(set(moved) - set(keep)))} moved too few arms at its "
              "cluster count to add to it"
              if set(moved) - set(keep) else "") + ".")


GAIN_SIGN = {"nll": -1.0, "seq_rep_4": -1.0}  # lower is better; every other metric: higher


def _tuned_gains(result: dict) -> list[str]:
  """'<task> <metric>' for each evaluation metric the tuned cache improved detectably."""
  return [f"{task} {m}" for task, t in result["tasks"].items()
          for m, test in t["evaluation"].items()
          if _significant(test) and _side(test, GAIN_SIGN.get(m, 1.0))]


def positive_control(result: dict) -> str:
  """The cache tuned on the calibration split and tested on the evaluation split, per task."""
  pieces, gains = [], _tuned_gains(result)
  for task, t in result["tasks"].items():
    metric = TASKS[task][0]
    best, ev = t["best"], t["evaluation"]
    extra = (f", accuracy {_cell(ev['accuracy'], 100, '{:+.1f}')} points (MDE "
             f"{100 * ev['accuracy']['mde']:.1f})" if "accuracy" in ev else "")
    pieces.append(
        f"{task} (theta {best['theta']:g}, lam {best['lam']:g}; {t['clusters']['calibration']} "
        f"calibration and {t['clusters']['evaluation']} evaluation clusters): {metric} "
        f"{best[metric]['mean_diff']:+.4f} on calibration, {_cell(ev[metric])} on evaluation "
        f"(Holm p {ev[metric]['p_holm']:.3g}, MDE {ev[metric]['mde']:.4f}){extra}; the preset "
        f"cache there {_cell(t['preset_on_evaluation'][metric])}")
  verdict = (f"The suite sees a working memory: a detectable gain in {', '.join(gains)}."
             if gains else "Even tuned, the cache shows no detectable gain: the suite has not "
             "shown that it can see a working memory.")
  return (f"**Positive control, tuned ({result['model']}).** The continuous cache searched over "
          f"theta {result['thetas']} x lam {result['lams']} (window {result['window']}) on each "
          f"task's calibration split, the winner run on the evaluation split, paired with off "
          f"(`python -m experiments.dose_positive --model {result['model']}`, git "
          f"{result['git_commit'][:7]}): " + "; ".join(pieces) + f". {verdict}")


def answers(res: dict) -> list[str]:
  """The seed's four questions, answered from the study's numbers."""
  found = list(studies(res).values())
  if not found:
    return []
  out = []
  # (i) prior work, and what the layer measurably is
  cos = [a["activity"]["steering_cos"] for s in found for _, a in _attractor_arms(s)]
  versus = [(s, n, a["vs_average"][TASKS[s["task"]][0]]) for s in found
            for n, a in _attractor_arms(s) if "vs_average" in a]
  apart = [(s, n, t) for s, n, t in versus if t["t_ci95"][0] > 0 or t["t_ci95"][1] < 0]
  text = (f"**(i) Prior work.** The closest relatives are {PRIOR_WORK}. Measured, the layer is "
          f"closest to the first: its feedback's cosine with the running mean of its input "
          f"averaged {min(cos):.2f} to {max(cos):.2f} over the attractor arms")
  if versus:
    text += (f"; paired with a moving average of x of the same size (no attractors), "
             f"{len(versus) - len(apart)} of {len(versus)} attractor arms show no difference "
             "(95% t CI spans 0)")
    if apart:
      realised = lambda s, n: s["arms"][n]["activity"]["feedback_ratio_mean"]
      control = lambda n: "control:average/" + n.split("/", 1)[1]
      text += (" and " + "; ".join(
          f"{n} on {_where(s)} differs by {t['mean_diff']:+.4f} {ci_text(t['t_ci95'], '{:+.4f}')}"
          f" (realised feedback {realised(s, n):.3f} vs the control's "
          f"{realised(s, control(n)):.3f})" for s, n, t in apart[:4])
          + (f" and {len(apart) - 4} more" if len(apart) > 4 else "")
          + ". Where they differ, the attractor's feedback is the smaller one (its strength "
          "and similarity stay below 1), so compare along the realised ratio in the plots")
  out.append(text + ".")
  # (ii) limits
  pieces = []
  for s in found:
    if s["task"] == "generation":
      continue
    for preset in PRESETS:
      sims = {n: tuple(a["activity"]["max_sim_quantiles"]) for n, a in _attractor_arms(s)
              if n.startswith(f"{preset}/open/")}
      if len(sims) > 1 and len(set(sims.values())) == 1:
        pieces.append(f"{preset} ({_where(s)})")
  text = "**(ii) Limits.** "
  if pieces:
    text += ("Open loop under teacher forcing, the attractor's state does not depend on its "
             "feedback: its max-similarity quantiles are identical at every ratio for "
             + ", ".join(pieces) + ". ")
  for s in found:
    for metric, first in s["first_detectable_harm"].items():  # the task's main metric first
      harms = [f"{family} {'never' if ratio is None else f'from {ratio}'}"
               for family, ratio in first.items()]
      text += (f"Harm to {metric} ({_where(s)}) first detectable (Holm): " + ", ".join(harms)
               + ". ")
  for s in found:
    if s["task"] != "ppl":
      continue
    small = [abs(a["vs_off"]["nll"]["mean_diff"]) for n, a in s["arms"].items()
             if n.count("/") == 2 and not n.startswith("control:random")
             and a["activity"]["feedback_ratio_mean"] <= 0.035]
    if small:
      text += (f"The output change is bounded by the feedback's size: on {s['model']} no "
               f"attractor or mean-direction arm whose realised feedback is at most 3.5% of the "
               f"residual norm moves the NLL by more than {max(small):.4f} nats per token "
               f"(about {100 * max(small):.2f}% perplexity); a random direction is harmful "
               "sooner. ")
  for s in (s for s in found if s["task"] == "kv"):
    text += _kv_limits(s)
  out.append(text.strip())
  # (iii) strictly worse than the cache
  text = "**(iii) Against the cache (paired, same clusters).** "
  for s in found:
    metric = TASKS[s["task"]][0]
    if "positive:cache" not in s["arms"]:
      continue
    sign = _better_sign(s["task"])
    compared = [(n, a["vs_cache"][metric]) for n, a in _attractor_arms(s) if "vs_cache" in a]
    worse = [n for n, t in compared if _side(t, -sign)]
    better = [n for n, t in compared if _side(t, sign)]
    cache = s["arms"]["positive:cache"]["vs_off"][metric]
    verdict = ("a detectable gain" if _significant(cache) and _side(cache, sign) else
               "a detectable harm" if _significant(cache) else "no detectable change")
    text += (f"{_where(s)}: the cache at its preset vs off {_cell(cache)} ({verdict}); the layer "
             f"is strictly worse than it in {len(worse)} of {len(compared)} arms (lowest ratio "
             f"{_lowest_ratio(worse)}) and strictly better in {len(better)}. ")
    text += _versus_tuned_cache(s, res.get(f"dose_positive_{s['model']}", {}))
  out.append(text.strip())
  # (iv) the minimal suite
  rows = []
  for s in found:
    metric, sign = TASKS[s["task"]][0], _better_sign(s["task"])
    found_arms = {n: a["vs_off"][metric] for n, a in s["arms"].items()
                  if n != "off" and _significant(a["vs_off"][metric])}
    gains = sorted(n for n, t in found_arms.items() if _side(t, sign))
    harms = sorted({n.rsplit("/", 1)[0] for n, t in found_arms.items() if _side(t, -sign)})
    mdes = [a["vs_off"][metric]["mde"] for n, a in s["arms"].items() if n != "off"]
    rows.append(f"{_where(s)} ({s['clusters']} clusters, {metric}, MDE {min(mdes):.4f} to "
                f"{max(mdes):.4f}{_headroom(s)}): gains in "
                f"{', '.join(gains) if gains else 'no arm'}; harm in "
                f"{', '.join(harms) if harms else 'no arm'}")
  out.append("**(iv) The suite.** " + "; ".join(rows) + ". " + _comprehension(res)
             + _recommendation(found, res))
  out += [positive_control(p) for stem, p in sorted(res.items())
          if stem.startswith("dose_positive_") and "git_commit" in p]
  for stem, cal in sorted(res.items()):
    if stem.startswith("dose_calibration_") and "evaluation" in cal:
      best, ev = cal["best"], cal["evaluation"]
      out.append(
          f"**Calibration ({cal['model']}).** Of {len(cal['search'])} `gated` settings searched "
          f"on {', '.join(cal['calibration_novels'])} ({cal['clusters']} windows), the best "
          f"(feedback ratio {best['feedback_ratio']}, theta_gate {best['theta_gate']}, burn-in "
          f"{best['burn_in_steps']} tokens; gate open {best['gate_open']:.2f}) changed NLL by "
          f"{best['mean_diff']:+.4f} {ci_text(best['t_ci95'], '{:+.4f}')} there and by "
          f"{ev['mean_diff']:+.4f} {ci_text(ev['t_ci95'], '{:+.4f}')} on the held-out "
          f"{', '.join(cal['evaluation_novels'])} (gate open {ev['gate_open']:.2f}; p = "
          f"{ev['p_value']:.3g}, MDE {ev['mde']:.4f})." + _all_harm(cal))
  return out


def _all_harm(cal: dict) -> str:
  """A sentence when every setting searched raised the NLL on the calibration windows."""
  if min(row["mean_diff"] for row in cal["search"]) <= 0:
    return ""
  return (" Every setting searched raised the NLL on the calibration windows: the best is the "
          "least harmful, not a gain.")
