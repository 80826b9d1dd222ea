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
}


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
  runs = {k.removeprefix("e1_ppl_"): v for k, v in res.items() if k.startswith("e1_ppl_")}
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
  rows = [f"seed: {100 * (r['decode_time_seed_vs_off'] - 1):+.1f}%, multiscale: "
          f"{100 * (r['decode_time_multiscale_vs_off'] - 1):+.1f}% decode time vs off "
          f"(median of {b['repeats']} runs)"]
  ms = b["decode_ms_per_token"]
  section = ["## E2: compute overhead (jitted decode, same run)", "",
             "| side | ms/token (median) | min | max |", "|---|---|---|---|"]
  section += [f"| {k} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |" for k, v in ms.items()]
  section += ["", f"Bandwidth limit: {b['bandwidth_limit_ms_per_token']:.1f} ms/token "
              f"({b['weight_bytes'] / 1e6:.0f} MB of weights at {b['gemv_bandwidth_gbs']:.1f} GB/s). "
              f"Machine: {b['machine']['cpus']} CPUs, {b['machine']['platform']}. "
              "Command: `attractor-jax bench`.", ""]
  return rows, section


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


def build(results_dir: str | pathlib.Path = "results") -> str:
  """The text of RESULTS.md."""
  results = pathlib.Path(results_dir)
  res = _load(results)
  parts = {"E1": _e1(res), "E2": _e2(res), "E3": _e3(res), "E4": _e4(res),
           "E5": _e5(res), "E6": _e6(res)}
  lines = ["# Results", "", "Generated by `attractor-jax report` from `results/*.json`; every "
           "number below is in one of those files, with the command that produced it.", "",
           "## The seed's claims beside ours", "", "| # | seed's claim | ours |", "|---|---|---|"]
  for key, claim in CLAIMS.items():
    rows = parts.get(key, ([], []))[0]
    lines.append(f"| {key} | {claim} | {'<br>'.join(rows) if rows else 'not yet measured'} |")
  lines.append("")
  for _, section in parts.values():
    lines += section
  return "\n".join(lines) + "\n"


def write(results_dir: str | pathlib.Path = "results", out: str | pathlib.Path = "RESULTS.md"):
  pathlib.Path(out).write_text(build(results_dir))
