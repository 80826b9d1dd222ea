"""`attractor-jax report`: builds RESULTS.md from results/*.json (nothing typed by hand).

First the seed's claims beside ours, then a section per experiment, then conclusions that
follow from the numbers (a CI that spans zero is reported as "no detectable change"; p-values are always shown).
Experiments without a result file are listed as not yet measured.
"""

from __future__ import annotations

import json
import pathlib

CLAIMS = {
    "E1": "perplexity ~0% change",
    "E2": "~6.5% compute overhead",
    "E3": "~80% accuracy drop on ~500-token generation (repetition, drift)",
    "E4": "+3.3% with gating + burn-in on a short comprehension task",
    "E5": "too many attractors unstable; heavy decay stateless",
    "E6": "snap-back to earlier topics; stable concept attractors; dead ones become noise",
    "E7": "(question) when is the layer strictly worse than a cache or recurrence?",
    "Suite": "(question) what minimal benchmark suite shows more than perplexity?",
}


# Related-work memories (issue 6): reported in their own section, not as the seed's presets.
MEMORIES = ("cache", "hopfield", "steering", "fastweights", "dynamic-eval")


def _load(results: pathlib.Path) -> dict[str, dict]:
  return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def _ci(ci, fmt="{:+.2f}") -> str:
  return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _verdict(ci, p: float) -> str:
  """Direction when the bootstrap CI excludes 0; the permutation p is always shown (with few
  clusters its smallest possible value can exceed 0.05, e.g. 2/16 with 4 prompts)."""
  if ci[0] <= 0 <= ci[1]:
    return f"no detectable change: CI spans 0, p = {p:.3f}"
  return f"{'higher' if ci[0] > 0 else 'lower'} than off: CI excludes 0, p = {p:.3f}"


def _e1(res: dict) -> tuple[list[str], list[str]]:
  runs = {k.removeprefix("e1_ppl_"): v for k, v in res.items()
          if k.startswith("e1_ppl_") and k.removeprefix("e1_ppl_") not in MEMORIES}
  if not runs:
    return [], []
  rows, section = [], ["## E1: perplexity with the layer updating token by token", "",
                       "| preset | ppl (mean of seeds) | baseline ppl | change % | 95% CI (windows) | p | seeds | tokens |",
                       "|---|---|---|---|---|---|---|---|"]
  for preset, r in runs.items():
    section.append(f"| {preset} | {r['ppl']:.3f} | {r['baseline_ppl']:.3f} | {r['delta_pct']:+.3f} | "
                   f"{_ci(r['delta_pct_ci95'], '{:+.3f}')} | {r.get('p_value', float('nan')):.3f} | "
                   f"{r['seeds']} | {r['tokens']} |")
    rows.append(f"{preset}: {r['delta_pct']:+.2f}% {_ci(r['delta_pct_ci95'])} "
                f"({r['seeds']} seeds, {r['tokens']} tokens)")
  first = next(iter(runs.values()))
  section += ["", f"Data: first {first['tokens']} tokens of *Pride and Prejudice* from \"It is a truth "
              f"universally acknowledged\", {first['window']}-token windows, no BOS; model "
              f"{first['model']}. CI: bootstrap over windows of the seed-averaged per-token NLL "
              "difference; p: sign-flip permutation over windows. Command: "
              "`bash experiments/e1_perplexity.sh`.", ""]
  return rows, section


def _e2(res: dict) -> tuple[list[str], list[str]]:
  b = res.get("bench")
  if not b:
    return [], []
  r = b["ratios"]
  ms = b["decode_ms_per_token"]
  rows = [f"seed: {100 * (r['decode_time_seed_vs_off'] - 1):+.1f}%, multiscale: "
          f"{100 * (r['decode_time_multiscale_vs_off'] - 1):+.1f}% decode time vs off "
          f"(median of {b['repeats']} runs; off itself ranged {ms['off']['min']:.1f}-"
          f"{ms['off']['max']:.1f} ms/token)"]
  growth = res.get("growth")
  if growth:
    ks = growth["overhead_vs_K"]
    rows.append(f"growth run: seed / off {ks[0]['vs_off']:.3f} (K={ks[0]['K']}) to "
                f"{ks[-1]['vs_off']:.3f} (K={ks[-1]['K']}), {growth['repeats']} repeats")
  section = ["## E2: compute overhead (jitted decode, same run)", "",
             "| side | ms/token (median) | min | max |", "|---|---|---|---|"]
  section += [f"| {k} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |" for k, v in ms.items()]
  section += ["", f"Bandwidth limit: {b['bandwidth_limit_ms_per_token']:.1f} ms/token "
              f"({b['weight_bytes'] / 1e6:.0f} MB of weights at {b['gemv_bandwidth_gbs']:.1f} GB/s). "
              f"Machine: {b['machine']['cpus']} CPUs, {b['machine']['platform']}. "
              "Command: `attractor-jax bench`.", "",
              "| performance target (issue 7) | measured | target | met |", "|---|---|---|---|"]
  for name, ratio in r.items():
    shown = "n/a" if ratio is None else f"{ratio:.3f}"
    section.append(f"| {name} | {shown} | {b['targets'][name]} | {b['met'][name]} |")
  kernels = res.get("decode_kernels")
  if kernels:
    section += ["", "What each decode change bought, per kernel (`python -m "
                "experiments.decode_kernels`, medians of 30 calls):", "",
                "| kernel | before ms | after ms | saved ms |", "|---|---|---|---|"]
    section += [f"| {k} | {v['before_ms']:.2f} | {v['after_ms']:.2f} | {v['saved_ms']:.2f} |"
                for k, v in kernels["rows"].items()]
  return rows, section + [""]


def _e3(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e3_generation")
  if not r:
    return [], []
  metrics = list(next(iter(r["paired_vs_off"].values())))
  section = ["## E3: long generations: repetition and drift, paired with off", "",
             "| preset | metric | off mean | preset mean | diff | 95% CI | p |", "|---|---|---|---|---|---|---|"]
  rows = []
  for preset, paired in r["paired_vs_off"].items():
    for m in metrics:
      p = paired[m]
      section.append(f"| {preset} | {m} | {r['summary']['off'][m]['mean']:.3f} | "
                     f"{r['summary'][preset][m]['mean']:.3f} | {p['mean_diff']:+.3f} | "
                     f"{_ci(p['ci95'], '{:+.3f}')} | {p['p_value']:.3f} |")
    s = paired["seq_rep_4"]
    rows.append(f"{preset}: seq-rep-4 {s['mean_diff']:+.3f} {_ci(s['ci95'], '{:+.3f}')} vs off "
                f"({_verdict(s['ci95'], s['p_value'])})")
  section += ["", f"{r['n_items']} items ({len(r['data'])} prompts x {r['seeds']} seeds), "
              f"{r['max_new_tokens']} tokens, temperature {r['sampling']['temperature']}, "
              f"top-p {r['sampling']['top_p']}; CIs resample prompts. Command: "
              "`python -m experiments.e3_generation`.", "",
              f"![repetition vs position](results/{pathlib.Path(r['plot']).name})", ""]
  if r.get("drift_plot"):
    section += [f"![drift vs position](results/{pathlib.Path(r['drift_plot']).name})", ""]
  return rows, section


def _e3_recall(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e3_fact_recall")
  if not r:
    return [], []
  off = r["summary"]["off"]["mean"]
  section = ["## E3: fact recall after a long continuation, paired with off", "",
             "| preset | accuracy after the continuation | diff vs off (points) | 95% CI | p |",
             "|---|---|---|---|---|",
             f"| off, question right after the prompt | {100 * r['immediate_accuracy_off']:.1f}% | | | |",
             f"| off | {100 * off:.1f}% | | | |"]
  rows = [f"fact recall after {r['max_new_tokens']} tokens: off {100 * off:.1f}% (right after "
          f"the prompt {100 * r['immediate_accuracy_off']:.1f}%, chance {100 * r['chance']:.0f}%)"]
  for preset, paired in r["paired_vs_off"].items():
    a = paired["accuracy"]
    ci = [100 * c for c in a["ci95"]]
    section.append(f"| {preset} | {100 * r['summary'][preset]['mean']:.1f}% | "
                   f"{100 * a['mean_diff']:+.1f} | {_ci(ci, '{:+.1f}')} | {a['p_value']:.3f} |")
    rows.append(f"{preset}: recall {100 * a['mean_diff']:+.1f} points {_ci(ci, '{:+.1f}')} "
                f"({_verdict(a['ci95'], a['p_value'])})")
  section += ["", f"{r['n_items']} items x {r['seeds']} seeds, {r['max_new_tokens']} sampled "
              f"tokens (temperature {r['sampling']['temperature']}, top-p {r['sampling']['top_p']}); "
              "answers ranked by log-likelihood; CI resamples items. Command: "
              "`python -m experiments.e3_fact_recall`.", ""]
  return rows, section


def _e4(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e4_comprehension")
  if not r:
    return [], []
  section = ["## E4: multiple-choice comprehension, paired with off", "",
             "| preset | accuracy (mean over items) | diff vs off (points) | 95% CI | p | gold log-prob diff | 95% CI |",
             "|---|---|---|---|---|---|---|"]
  off = r["summary"]["off"]["accuracy"]["mean"]
  section.append(f"| off | {100 * off:.1f}% | | | | | |")
  rows = [f"off accuracy {100 * off:.1f}% (chance {100 * r['chance']:.0f}%)"]
  for preset, paired in r["paired_vs_off"].items():
    a, g = paired["accuracy"], paired["gold_logprob"]
    acc = r["summary"][preset]["accuracy"]["mean"]
    section.append(f"| {preset} | {100 * acc:.1f}% | {100 * a['mean_diff']:+.2f} | "
                   f"{_ci([100 * c for c in a['ci95']])} | {a['p_value']:.3f} | "
                   f"{g['mean_diff']:+.4f} | {_ci(g['ci95'], '{:+.4f}')} |")
    rows.append(f"{preset}: {100 * a['mean_diff']:+.2f} points {_ci([100 * c for c in a['ci95']])} "
                f"({_verdict(a['ci95'], a['p_value'])})")
  section += ["", f"{r['n_items']} items from {r['n_stories']} generated stories, {r['seeds']} seeds, "
              f"contexts read in {r['segment']}-token passes; CIs resample stories. Command: "
              "`python -m experiments.e4_comprehension`.", ""]
  return rows, section


def _suite_recall(res: dict) -> tuple[list[str], list[str]]:
  """Last-word cloze and key-value recall (experiments/suite_recall.py)."""
  r = res.get("suite_recall")
  if not r:
    return [], []
  rows, section = [], ["## Suite: last-word cloze and key-value recall, paired with off", ""]
  tasks = (("cloze", "last-word cloze (greedy accuracy)", r["cloze"]["n_chapters"], "chapters"),
           ("kv_recall", "key-value recall (4 choices)", r["kv_recall"]["n_items"], "items"))
  for task, title, clusters, unit in tasks:
    t = r[task]
    off = t["summary"]["off"]["accuracy"]["mean"]
    section += [f"**{title}**: {t['n_items']} items ({t['data']}), off {100 * off:.1f}%; "
                f"CIs resample {clusters} {unit}.", "",
                "| preset | accuracy | diff vs off (points) | 95% CI | p | gold log-prob diff | 95% CI |",
                "|---|---|---|---|---|---|---|"]
    rows.append(f"{title}: off {100 * off:.1f}%")
    for preset, paired in t["paired_vs_off"].items():
      a, g = paired["accuracy"], paired["gold_logprob"]
      ci = [100 * c for c in a["ci95"]]
      section.append(f"| {preset} | {100 * t['summary'][preset]['accuracy']['mean']:.1f}% | "
                     f"{100 * a['mean_diff']:+.2f} | {_ci(ci)} | {a['p_value']:.3f} | "
                     f"{g['mean_diff']:+.4f} | {_ci(g['ci95'], '{:+.4f}')} |")
      rows.append(f"{preset}: {100 * a['mean_diff']:+.2f} points {_ci(ci)} "
                  f"({_verdict(a['ci95'], a['p_value'])})")
    section.append("")
  kv = r["kv_recall"]
  section += ["Key-value recall accuracy by number of pairs and filler sentences before the "
              "question:", "", "| preset | " + " | ".join(kv["accuracy_by_cell"]["off"]) + " |",
              "|---" * (1 + len(kv["accuracy_by_cell"]["off"])) + "|"]
  for preset, cells in kv["accuracy_by_cell"].items():
    section.append(f"| {preset} | " + " | ".join(f"{100 * v:.0f}%" for v in cells.values()) + " |")
  section += ["", "![key-value recall](results/suite_recall_kv.png)", "",
              f"{r['seeds']} seeds, contexts read in {r['segment']}-token passes. Command: "
              "`python -m experiments.suite_recall`.", ""]
  return rows, section


def _e5(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e5_sweeps")
  if not r:
    return [], []
  section = ["## E5: sweeps of K and lambda (preset seed otherwise)", "",
             "| axis | value | KL(base \\|\\| layer) per token | 95% CI (seeds) | ppl change % | seed std of ppl |",
             "|---|---|---|---|---|---|"]
  for row in r["rows"]:
    kl = row["kl_per_token"]
    section.append(f"| {row['axis']} | {row['value']} | {kl['mean']:.2e} | "
                   f"{_ci(kl['ci95'], '{:.2e}')} | {row['delta_ppl_pct']:+.3f} | {row['ppl_seed_std']:.4f} |")
  by = lambda axis: [x for x in r["rows"] if x["axis"] == axis]
  rows = [f"{axis}: KL/token from {part[0]['kl_per_token']['mean']:.1e} ({axis}={part[0]['value']}) "
          f"to {part[-1]['kl_per_token']['mean']:.1e} ({axis}={part[-1]['value']}); seed std of ppl "
          f"{part[0]['ppl_seed_std']:.3f} to {part[-1]['ppl_seed_std']:.3f}"
          for axis in ("K", "lambda") if (part := by(axis))]
  section += ["", f"Data: {r['data']}; {r['seeds']} seeds; baseline ppl {r['baseline_ppl']:.2f}. "
              "Command: `python -m experiments.e5_sweeps`.", ""]
  section += [f"![{p}](results/{pathlib.Path(p).name})" for p in r["plots"]] + [""]
  return rows, section


def _e6(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e6_topics")
  if not r:
    return [], []
  off = r["summary"]["off"]["mean"]
  section = ["## E6: topic switch (snap-back), dead attractors, read-out", "",
             "| preset | snap-back share | diff vs off | 95% CI | p | dead share at end |",
             "|---|---|---|---|---|---|", f"| off | {off:.3f} | | | | |"]
  rows = [f"off snap-back share {off:.3f}"]
  for preset, p in r["paired_vs_off"].items():
    d = r["dead_share"][preset]["mean"]
    section.append(f"| {preset} | {r['summary'][preset]['mean']:.3f} | {p['mean_diff']:+.3f} | "
                   f"{_ci(p['ci95'], '{:+.3f}')} | {p['p_value']:.3f} | {d:.2f} |")
    rows.append(f"{preset}: snap-back {p['mean_diff']:+.3f} {_ci(p['ci95'], '{:+.3f}')} "
                f"({_verdict(p['ci95'], p['p_value'])}); dead {100 * d:.0f}%")
  first = next(iter(r["attractor_readout_top5"].items()), None)
  section += ["", f"{r['n_items']} items ({len(r['data'])} topic pairs x {r['seeds']} seeds), "
              f"{r['max_new_tokens']} tokens. Command: `python -m experiments.e6_topics`.", ""]
  if first:
    section += [f"Attractor read-out (top 5 tokens of each attractor through the unembedding), "
                f"{first[0]}, seed 0:", ""]
    section += [f"- {' '.join(repr(t) for t in toks)}" for toks in first[1]] + [""]
  return rows, section


def _calibration(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("calibration")
  if not r:
    return [], []
  c, st = r["cache"], r["strength"]
  b = c["best"]
  section = ["## Calibration (kept apart from evaluation)", "",
             f"Tuned on *{r['novel'].title()}* (the related-work memories' strengths and preset "
             "tuned; the seed, gated and multiscale presets keep METHOD.md's numbers). Perplexity "
             "(E1: Pride and Prejudice; E5: Persuasion), comprehension and topic-switch items "
             "use other text; the generation prompts of E3/E7 and the trajectories include "
             "Emma's opening (1 of 4 prompts; the trajectories' only one). "
             "Command: `python -m experiments.calibrate`.", "",
             f"- cache ({c['data']}; baseline ppl {c['baseline_ppl']:.2f}): best of "
             f"{len(c['rows'])} settings theta={b['theta']}, lam={b['lam']}, window={b['window']} "
             f"-> ppl {b['ppl']:.2f}. Check: the mixture computed offline and the memory run "
             f"token by token give {c['check']['offline_ppl']:.5f} and "
             f"{c['check']['stepwise_ppl']:.5f} on {c['check']['tokens']} tokens.",
             f"- strengths ({st['data']}; baseline ppl {st['baseline_ppl']:.2f}), ppl change %:", "",
             "| preset | knob | " + " | ".join(str(v) for v in
                                               dict.fromkeys(x["value"] for x in st["rows"]
                                                             if x["knob"] == "alpha")) + " |"]
  alphas = list(dict.fromkeys(x["value"] for x in st["rows"] if x["knob"] == "alpha"))
  section.append("|---|---|" + "---|" * len(alphas))
  for preset in dict.fromkeys(x["preset"] for x in st["rows"]):
    cells = {x["value"]: x for x in st["rows"] if x["preset"] == preset}
    knob = next(iter(cells.values()))["knob"]
    shown = [f"{v}: {x['delta_pct']:+.2f}" for v, x in cells.items()] if knob != "alpha" else [
        f"{cells[a]['delta_pct']:+.2f}" if a in cells else "" for a in alphas]
    section.append(f"| {preset} | {knob} | " + " | ".join(shown) + " |")
  return [], section + [""]


def _growth(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("growth")
  if not r:
    return [], []
  row = lambda label, pairs: f"| {label} | " + ", ".join(f"{k}: {v}" for k, v in pairs) + " |"
  section = ["## Performance growth curves", "", "| curve | points |", "|---|---|",
             row("decode time, preset seed / off, vs K",
                 [(x["K"], f"{x['vs_off']:.3f}") for x in r["overhead_vs_K"]]),
             row("attractor update alone (us), K=4, vs D",
                 [(x["D"], f"{x['update_us']:.0f}") for x in r["update_vs_D"] if x["K"] == 4]),
             row("decode ms/token (off) vs context",
                 [(x["context"], f"{x['ms_per_token']:.1f}") for x in r["decode_vs_context"]]),
             row("sweep wall, S seeds / 1 seed",
                 [(x["seeds"], f"{x['vs_one_seed']:.2f}") for x in r["sweep_vs_seeds"]]),
             "", f"{r['tokens']} decoded tokens per point, medians of {r['repeats']} repeats; "
             f"machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}. Command: "
             "`python -m experiments.growth` (run alone).", ""]
  section += [f"![{pathlib.Path(p).stem}](results/{pathlib.Path(p).name})" for p in r["plots"]]
  return [], section + [""]


def _trajectories(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("trajectories")
  if not r:
    return [], []
  last = lambda preset: (r["drift_by_position"][preset] or [float("nan")])[-1]
  section = ["## Strength trajectories and drift (attractor presets, one long generation)", "",
             "| preset | mean strength at the end (seed 0) | max | attractors above 0.5 | "
             "drift cos, last window (mean of seeds) |", "|---|---|---|---|---|",
             f"| off | | | | {last('off'):.3f} |"]
  for preset, f in r["strength_seed0_end"].items():
    section.append(f"| {preset} | {f['mean_strength_end']:.3f} | {f['max_strength_end']:.3f} | "
                   f"{f['attractors_above_0.5_end']} | {last(preset):.3f} |")
  section += ["", f"Data: {r['data']}; {r['seeds']} seeds, {r['max_new_tokens']} tokens, "
              f"temperature {r['sampling']['temperature']}, top-p {r['sampling']['top_p']}. "
              "Command: `python -m experiments.trajectories`.", ""]
  section += [f"![{pathlib.Path(p).stem}](results/{pathlib.Path(p).name})" for p in r["plots"]]
  return [], section + [""]


def _direction(ci, more: str, less: str) -> str:
  return "no detectable change" if ci[0] <= 0 <= ci[1] else (more if ci[0] > 0 else less)


def _conclusions(res: dict) -> list[str]:
  """Plain sentences, each derived from the numbers above (nothing here is typed by hand)."""
  out = []
  e1 = {k.removeprefix("e1_ppl_"): v for k, v in res.items()
        if k.startswith("e1_ppl_") and k.removeprefix("e1_ppl_") not in MEMORIES}
  if e1:
    widest = max(max(abs(c) for c in r["delta_pct_ci95"]) for r in e1.values())
    out.append(f"Perplexity: every attractor preset's 95% CI lies within +-{widest:.2f}% of the "
               "baseline" + (". The layer neither helps nor hurts perplexity by more than 1% "
                             "here, which matches the seed's ~0%." if widest < 1 else "."))
  e3 = res.get("e3_generation")
  if e3:
    found = {p: _direction(v["seq_rep_4"]["ci95"], "more", "less")
             for p, v in e3["paired_vs_off"].items()}
    parts = [f"{p} {d} ({e3['paired_vs_off'][p]['seq_rep_4']['mean_diff']:+.3f})"
             for p, d in found.items()]
    detected = {d for d in found.values() if d != "no detectable change"}
    out.append(f"Long generations ({e3['max_new_tokens']} tokens), 4-gram repetition vs off: "
               + "; ".join(parts) + "." + (" Every detectable change is more repetition, the "
                                          "failure the seed reported." if detected == {"more"}
                                          else ""))
  recall = res.get("e3_fact_recall")
  if recall:
    off = recall["summary"]["off"]["mean"]
    out.append(f"Fact recall after {recall['max_new_tokens']} generated tokens: off "
               f"{100 * off:.0f}% vs {100 * recall['immediate_accuracy_off']:.0f}% when asked "
               f"right after the prompt ({recall['n_items']} items); vs off: " + "; ".join(
                   f"{p} {_direction(v['accuracy']['ci95'], 'higher', 'lower')}"
                   for p, v in recall["paired_vs_off"].items()) + ".")
  e4 = res.get("e4_comprehension")
  if e4:
    off = e4["summary"]["off"]["accuracy"]["mean"]
    out.append(f"Comprehension: off answers {100 * off:.0f}% correctly against a chance level of "
               f"{100 * e4['chance']:.0f}%. "
               + ("With the model at chance, the seed's +3.3% cannot be tested with it; "
                  if off < e4["chance"] + 0.05 else "")
               + "; ".join(f"{p}: {_direction(v['accuracy']['ci95'], 'higher', 'lower')}"
                           for p, v in e4["paired_vs_off"].items()) + ".")
  suite = res.get("suite_recall")
  if suite:
    for task, name in (("cloze", "Last-word cloze"), ("kv_recall", "Key-value recall")):
      t = suite[task]
      out.append(f"{name}: off {100 * t['summary']['off']['accuracy']['mean']:.0f}% "
                 f"({t['n_items']} items); accuracy vs off: " + "; ".join(
                     f"{p} {_direction(v['accuracy']['ci95'], 'higher', 'lower')}, gold "
                     f"log-prob {_direction(v['gold_logprob']['ci95'], 'higher', 'lower')}"
                     for p, v in t["paired_vs_off"].items()) + ".")
  e5 = res.get("e5_sweeps")
  if e5:
    ks = [r for r in e5["rows"] if r["axis"] == "K"]
    if ks:
      trend = "falls" if ks[-1]["kl_per_token"]["mean"] < ks[0]["kl_per_token"]["mean"] else "rises"
      out.append(f"More attractors: KL to the baseline {trend} from "
                 f"{ks[0]['kl_per_token']['mean']:.1e} (K={ks[0]['value']}) to "
                 f"{ks[-1]['kl_per_token']['mean']:.1e} (K={ks[-1]['value']}); "
                 + ("many attractors make the layer inert rather than unstable."
                    if trend == "falls" else "many attractors move the model more."))
  e6 = res.get("e6_topics")
  if e6:
    out.append("Topic switch: snap-back vs off, " + "; ".join(
        f"{p} {_direction(v['ci95'], 'more', 'less')}" for p, v in e6["paired_vs_off"].items())
        + ".")
  traj = res.get("trajectories")
  if traj:
    out.append(f"Strength over {traj['max_new_tokens']} generated tokens (seed 0): " + "; ".join(
        f"{p} ends with {f['attractors_above_0.5_end']} attractor(s) above 0.5 and mean strength "
        f"{f['mean_strength_end']:.2f}" for p, f in traj["strength_seed0_end"].items()) + ".")
  cal = res.get("calibration")
  if cal:
    best = cal["strength"]["best"]
    pieces = [f"{n} {best[n]['delta_pct']:+.2f}%" for n in ("seed", "steering", "hopfield",
                                                             "fastweights") if n in best]
    close = ("seed" in best and "steering" in best
             and abs(best["seed"]["delta_pct"] - best["steering"]["delta_pct"]) < 0.25)
    out.append(f"Calibration ({cal['novel']}, token by token): at their best strength, "
               + ", ".join(pieces) + " perplexity change." + (
                   " A fixed steering vector comes within 0.25 points of the learning attractor "
                   "layer, which suggests that most of what the layer does to perplexity is a "
                   "constant push along the mean attention direction." if close else "")
               + (" On E1's novel, at the same settings: " + ", ".join(
                   f"{n} {res[f'e1_ppl_{n}']['delta_pct']:+.2f}% {_ci(res[f'e1_ppl_{n}']['delta_pct_ci95'])}"
                   for n in ("tuned", "steering", "hopfield", "fastweights") if f"e1_ppl_{n}" in res)
                  + " (tuned is seed at its calibrated alpha)" + (
                      ": none differs detectably from off on that novel." if all(
                          res[f"e1_ppl_{n}"]["delta_pct_ci95"][0] <= 0 <= res[f"e1_ppl_{n}"]["delta_pct_ci95"][1]
                          for n in ("tuned", "steering", "hopfield", "fastweights")
                          if f"e1_ppl_{n}" in res) else ".")
                  if "e1_ppl_steering" in res else ""))
  table = memory_table(res)
  long = res.get("e7_ppl_cache_long")
  if long:
    out.append(f"The continuous cache changes perplexity by {long['delta_pct']:+.2f}% "
               f"{_ci(long['delta_pct_ci95'])} over {long['tokens']} tokens of E1's novel ("
               + _direction(long["delta_pct_ci95"], "worse than off", "better than off") + ").")
    refs = [r["ppl change %"] for r in table if r["memory"] in ATTRACTOR_ROWS and r["ppl change %"]]
    if refs and all(long["delta_pct_ci95"][1] < ref["ci95"][0] for ref in refs):
      out.append(f"On perplexity the attractor layer is strictly worse than the cache: the "
                 f"cache's CI over {long['tokens']} tokens lies below every attractor row's CI "
                 "(E1, the first 2,048 of those tokens).")
  if any(r["memory"] in MEMORIES and any(r[m] for m in r if m != "memory") for r in table):
    out.append("Against the attractor layer on E7's table (same text and items): "
               + "; ".join(_memory_answer(table)) + ".")
  return out


def _cell(paired: dict | None, scale: float = 1.0, fmt: str = "{:+.3f}") -> str:
  """"diff [CI]" of a paired comparison, bold when the CI excludes 0; blank when absent."""
  if paired is None:
    return "n/a"
  lo, hi = (scale * c for c in paired["ci95"])
  text = f"{fmt.format(scale * paired['mean_diff'])} [{fmt.format(lo)}, {fmt.format(hi)}]"
  return f"**{text}**" if lo > 0 or hi < 0 else text


def _ppl_paired(r: dict | None) -> dict | None:
  if r is None:
    return None
  return {"mean_diff": r["delta_pct"], "ci95": r["delta_pct_ci95"], "p_value": r.get("p_value")}


ATTRACTOR_ROWS = ("seed", "tuned")  # the attractor layer's rows beside the memories


def memory_table(res: dict) -> list[dict[str, dict | None]]:
  """One row per attractor preset and memory: each suite metric paired vs off, looked up in
  E7's files first, then in the E1/E4/E6 files (the same settings) for the attractor rows."""
  def pick(name, metric, *files):
    for f in files:
      found = (res.get(f) or {}).get("paired_vs_off", {}).get(name)
      if found is not None:
        return found.get(metric) if metric else found
    return None

  rows = []
  for name in (*ATTRACTOR_ROWS, *MEMORIES):
    rows.append({
        "memory": name,
        "ppl change %": _ppl_paired(res.get(f"e1_ppl_{name}")),
        **{label: pick(name, m, "e7_generation") for label, m in (
            ("seq-rep-4", "seq_rep_4"), ("rep/128", "rep_128"), ("distinct-2", "distinct_2"),
            ("drift cos", "drift_last_cos"))},
        "accuracy (points)": pick(name, "accuracy", "e7_comprehension", "e7_comprehension_tuned",
                                  "e4_comprehension"),
        "snap-back": pick(name, None, "e7_topics", "e6_topics")})
  return rows


def _memories(res: dict) -> tuple[list[str], list[str]]:
  if not any(k in res for k in ("e7_generation", "e7_comprehension", "e7_topics")) and not any(
      f"e1_ppl_{m}" in res for m in MEMORIES):
    return [], []
  table = memory_table(res)
  metrics = [k for k in table[0] if k != "memory"]
  section = ["## E7: related-work memories on the same suite, paired with off", "",
             "Each cell: mean difference vs off [95% bootstrap CI]; **bold** where the CI excludes 0. "
             "Rows: the attractor layer (presets seed and tuned = seed at the calibrated alpha) "
             "and the five related-work memories (`attractor_jax/memories/`, presets of the same "
             "names, strengths calibrated on *Emma*).", "",
             "| memory | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
  for row in table:
    cells = [_cell(row[m], 100.0 if m.startswith("accuracy") else 1.0) for m in metrics]
    section.append(f"| {row['memory']} | " + " | ".join(cells) + " |")
  gen, comp, top = (res.get(k) for k in ("e7_generation", "e7_comprehension", "e7_topics"))
  notes = []
  if any(f"e1_ppl_{m}" in res for m in MEMORIES):
    notes.append("ppl: E1's text and windows, token by token, 1 seed for the memories (no "
                 "random init), 8 for the attractor rows; CI over windows")
  if gen:
    notes.append(f"generation: {gen['n_items']} items ({len(gen['data'])} prompts x "
                 f"{gen['seeds']} seeds), {gen['max_new_tokens']} tokens, sampled; CIs resample prompts")
  if comp:
    notes.append(f"accuracy: {comp['n_items']} comprehension items (E4's), {comp['seeds']} seed "
                 "for the memories, 8 for the attractor rows, off at "
                 f"{100 * comp['summary']['off']['accuracy']['mean']:.1f}% (chance "
                 f"{100 * comp['chance']:.0f}%)")
  if top:
    dropped = {k: v for k, v in top.get("items_without_a_window", {}).items() if v}
    notes.append(f"snap-back: {top['n_items']} items ({len(top['data'])} topic pairs x "
                 f"{top['seeds']} seeds; seed's row from E6)" + (
                     ", items whose continuation stopped before one 50-token window left out: "
                     + ", ".join(f"{k} {v}" for k, v in dropped.items()) if dropped else ""))
  section += ["", "; ".join(notes) + ". Command: `bash experiments/e7_memories.sh`.", ""]
  long = res.get("e7_ppl_cache_long")
  if long:
    section += [f"The cache over more text: {long['tokens']} tokens of the same novel "
                f"({long['windows']} windows of {long['window']}), perplexity {long['ppl']:.3f} vs "
                f"baseline {long['baseline_ppl']:.3f}: {_cell(_ppl_paired(long))}%, sign-flip "
                f"p = {long['p_value']:.4f}.", ""]
  if gen:
    section += [f"![{what}](results/{pathlib.Path(gen[key]).name})"
                for what, key in (("repetition vs position", "plot"), ("drift", "drift_plot"))
                if gen.get(key)] + [""]
  rows = _memory_answer(table)
  if long:
    rows.insert(0, f"cache: ppl {long['delta_pct']:+.2f}% {_ci(long['delta_pct_ci95'])} over "
                   f"{long['tokens']} tokens (attractor rows: see E1)")
  return rows, section


def _memory_answer(table: list[dict]) -> list[str]:
  """Strict wins either way, with non-overlapping CIs (lower ppl and repetition, higher
  distinct-2): a memory over every attractor row, and any attractor row over a memory."""
  attractors = [r for r in table if r["memory"] in ATTRACTOR_ROWS]
  lower_is_better = {"ppl change %": True, "seq-rep-4": True, "rep/128": True, "distinct-2": False}

  def beats(mine, theirs, lower):
    return mine["ci95"][1] < theirs["ci95"][0] if lower else mine["ci95"][0] > theirs["ci95"][1]

  lines = []
  for row in table:
    if row["memory"] in ATTRACTOR_ROWS:
      continue
    wins = [m for m, lower in lower_is_better.items()
            if row[m] and (refs := [a[m] for a in attractors if a[m]])
            and all(beats(row[m], ref, lower) for ref in refs)]
    if wins:
      lines.append(f"{row['memory']} is better than every attractor row on {', '.join(wins)}")
    for a in attractors:
      losses = [m for m, lower in lower_is_better.items()
                if row[m] and a[m] and beats(a[m], row[m], lower)]
      if losses:
        lines.append(f"{a['memory']} is better than {row['memory']} on {', '.join(losses)}")
  return lines or ["no memory and attractor row separate with non-overlapping CIs"]


def build(results_dir: str | pathlib.Path = "results") -> str:
  """The text of RESULTS.md."""
  results = pathlib.Path(results_dir)
  res = _load(results)
  e3, recall = _e3(res), _e3_recall(res)
  parts = {"E1": _e1(res), "E2": _e2(res), "E3": (e3[0] + recall[0], e3[1] + recall[1]),
           "E4": _e4(res),
           "E5": _e5(res), "E6": _e6(res), "trajectories": _trajectories(res),
           "E7": _memories(res), "Suite": _suite_recall(res), "calibration": _calibration(res),
           "growth": _growth(res)}
  lines = ["# Results", "", "Generated by `attractor-jax report` from `results/*.json`; every "
           "number below is in one of those files, with the command that produced it.", "",
           "## The seed's claims beside ours", "", "| # | seed's claim | ours |", "|---|---|---|"]
  for key, claim in CLAIMS.items():
    rows = parts.get(key, ([], []))[0]
    lines.append(f"| {key} | {claim} | {'<br>'.join(rows) if rows else 'not yet measured'} |")
  lines.append("")
  if "run_all" in res and not res["run_all"]["quick"]:
    r = res["run_all"]
    lines += [f"The suite (`python -m experiments.run_all`) ran end to end in "
              f"{r['wall_s'] / 60:.0f} minutes on {r['machine']['cpus']} CPUs, {r['machine']['platform']} (git "
              f"{r['git_commit'][:7]}).", ""]
  for _, section in parts.values():
    lines += section
  conclusions = _conclusions(res)
  if conclusions:
    lines += ["## What we conclude", ""] + [f"- {c}" for c in conclusions] + [""]
  return "\n".join(lines) + "\n"


def write(results_dir: str | pathlib.Path = "results", out: str | pathlib.Path = "RESULTS.md"):
  pathlib.Path(out).write_text(build(results_dir))
