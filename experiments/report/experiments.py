"""The sections of the seed's experiments E1 and E3-E6, the suite's recall tasks and the
strength trajectories: each returns (claim-table rows, section lines)."""

from __future__ import annotations

import pathlib

from experiments.report.format import ci_text, verdict
from experiments.report.memories import MEMORIES


def e1_section(res: dict) -> tuple[list[str], list[str]]:
  runs = {k.removeprefix("e1_ppl_"): v for k, v in res.items()
          if k.startswith("e1_ppl_") and k.removeprefix("e1_ppl_") not in MEMORIES}
  if not runs:
    return [], []
  rows, section = [], ["## E1: perplexity with the layer updating token by token", "",
                       "| preset | ppl (mean of seeds) | baseline ppl | change % | 95% CI (windows) | p | seeds | tokens | gate open |",
                       "|---|---|---|---|---|---|---|---|---|"]
  for preset, r in runs.items():
    section.append(f"| {preset} | {r['ppl']:.3f} | {r['baseline_ppl']:.3f} | {r['delta_pct']:+.3f} | "
                   f"{ci_text(r['delta_pct_ci95'], '{:+.3f}')} | {r.get('p_value', float('nan')):.3f} | "
                   f"{r['seeds']} | {r['tokens']} | {_gate_text(r.get('gate_open', 'absent'))} |")
    rows.append(f"{preset}: {r['delta_pct']:+.2f}% {ci_text(r['delta_pct_ci95'])} "
                f"({r['seeds']} seeds, {r['tokens']} tokens){_gate_phrase(r.get('gate_open'))}")
  first = next(iter(runs.values()))
  section += ["", f"Data: first {first['tokens']} tokens of *Pride and Prejudice* from \"It is a truth "
              f"universally acknowledged\", {first['window']}-token windows, no BOS; model "
              f"{first['model']}. CI: bootstrap over windows of the seed-averaged per-token NLL "
              "difference; p: sign-flip permutation over windows. Command: "
              "`bash experiments/e1_perplexity.sh`.", ""]
  return rows, section


def e3_section(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e3_generation")
  if not r:
    return [], []
  metrics = list(next(iter(r["paired_vs_off"].values())))
  section = ["## E3: long generations: repetition and drift, paired with off", "",
             "| preset | metric | off mean | preset mean | diff | 95% CI | p | Holm p | MDE |",
             "|---|---|---|---|---|---|---|---|---|"]
  rows = []
  for preset, paired in r["paired_vs_off"].items():
    for m in metrics:
      p = paired[m]
      section.append(f"| {preset} | {m} | {r['summary']['off'][m]['mean']:.3f} | "
                     f"{r['summary'][preset][m]['mean']:.3f} | {p['mean_diff']:+.3f} | "
                     f"{ci_text(p['ci95'], '{:+.3f}')} | {p['p_value']:.3f} | "
                     f"{_holm_mde(p, fmt='{:.3f}')} |")
    s = paired["seq_rep_4"]
    rows.append(f"{preset}: seq-rep-4 {s['mean_diff']:+.3f} {ci_text(s['ci95'], '{:+.3f}')} vs off "
                f"({verdict(s['ci95'], s['p_value'])}{_mde_phrase(s)}){_gate_note(r, preset)}")
  section += ["", f"{r['n_items']} items ({len(r['data'])} prompts x {r['seeds']} seeds), "
              f"{r['max_new_tokens']} tokens, temperature {r['sampling']['temperature']}, "
              f"top-p {r['sampling']['top_p']}; CIs resample prompts; Holm over the presets "
              "per metric; MDE at 80% power over prompt means. Command: "
              "`python -m experiments.e3_generation`.", "",
              f"![repetition vs position](results/{pathlib.Path(r['plot']).name})", ""]
  if r.get("drift_plot"):
    section += [f"![drift vs position](results/{pathlib.Path(r['drift_plot']).name})", ""]
  return rows, section


CHOICE_TABLE = ("| preset | accuracy | diff vs off (points) | 95% CI | p | Holm p | MDE (points) | "
                "gold log-prob diff | 95% CI | gate open |", "|---|---|---|---|---|---|---|---|---|---|")


def _holm_mde(test: dict, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
  """The Holm p and minimum detectable effect cells of a test ('-' where not recorded)."""
  p_holm = f"{test['p_holm']:.3f}" if "p_holm" in test else "-"
  mde = fmt.format(scale * test["mde"]) if test.get("mde") is not None else "-"
  return f"{p_holm} | {mde}"


def _mde_phrase(test: dict, scale: float = 1.0, unit: str = "") -> str:
  return f", MDE {scale * test['mde']:.2f}{unit}" if test.get("mde") is not None else ""


RARELY_OPEN = 0.1  # a gate open on fewer context passes is named beside the preset's verdict


def _gate_text(share) -> str:
  """A preset's share of context passes with the gate open, as a table cell."""
  if share == "absent" or share is None:
    return "not recorded" if share == "absent" else "no gate"
  return f"{100 * share:.3g}%"


def _gate_note(r: dict, preset: str) -> str:
  """`_gate_phrase` of a preset in a file that records each preset's gate share."""
  return _gate_phrase(r.get("gate_open", {}).get(preset))


def _gate_phrase(share) -> str:
  """'; gate open on N% of passes' for a recorded gate share, saying so when it never opened
  (then the verdict beside it tests nothing); '' when none is recorded."""
  if share is None:
    return ""
  if share == 0.0:
    return "; its gate never opened (0% of passes): not a test"
  return f"; gate open on {'only ' if share < RARELY_OPEN else ''}{_gate_text(share)} of passes"


def _choice_rows(r: dict, section: list[str], rows: list[str]):
  """Appends, per preset, the table row (accuracy and gold log-prob vs off, gate openness)
  and claim row; a preset whose gate never opened is reported as not tested."""
  for preset, paired in r["paired_vs_off"].items():
    a, g = paired["accuracy"], paired["gold_logprob"]
    ci = [100 * c for c in a["ci95"]]
    share = r.get("gate_open", {}).get(preset, "absent")
    section.append(f"| {preset} | {100 * r['summary'][preset]['accuracy']['mean']:.1f}% | "
                   f"{100 * a['mean_diff']:+.2f} | {ci_text(ci)} | {a['p_value']:.3f} | "
                   f"{_holm_mde(a, 100)} | {g['mean_diff']:+.4f} | {ci_text(g['ci95'], '{:+.4f}')} | "
                   f"{_gate_text(share)} |")
    if share == 0.0:
      rows.append(f"{preset}: not a test: its gate never opened (0% of context passes)")
      continue
    rows.append(f"{preset}: {100 * a['mean_diff']:+.2f} points {ci_text(ci)} "
                f"({verdict(a['ci95'], a['p_value'])}{_mde_phrase(a, 100, ' points')})")
    if isinstance(share, float):
      rows[-1] += (f"; its gate opened on only {_gate_text(share)}" if share < RARELY_OPEN
                   else f"; gate open on {_gate_text(share)}") + " of context passes"


def e4_files(res: dict) -> dict[str, dict]:
  """E4's result files by model name (results/e4_comprehension[_<model>].json)."""
  return {r["model"]: r for k, r in res.items()
          if k == "e4_comprehension" or k.startswith("e4_comprehension_")}


def e4_section(res: dict) -> tuple[list[str], list[str]]:
  files = e4_files(res)
  if not files:
    return [], []
  rows, section = [], ["## E4: multiple-choice comprehension, paired with off", ""]
  for model, r in files.items():
    off = r["summary"]["off"]["accuracy"]["mean"]
    section += [f"**{model}**: {r['n_items']} items ({r['data']}), off {100 * off:.1f}% "
                f"(chance {100 * r['chance']:.0f}%).", "", *CHOICE_TABLE,
                f"| off | {100 * off:.1f}% | | | | | | | | |"]
    rows.append(f"{model}: off accuracy {100 * off:.1f}% (chance {100 * r['chance']:.0f}%, "
                f"{r['n_stories']} stories)")
    _choice_rows(r, section, rows)
    flag = "" if model == "smollm2-135m" else f" --model {model}"
    section += ["", f"{r['n_items']} questions on {r['n_stories']} generated stories, {r['seeds']} seeds, "
                f"contexts read {_passes(r['segment'])}; CIs resample stories; Holm over the "
                "presets; MDE: the minimum detectable effect at 80% power. Gate open: the share "
                "of context passes whose gate was open (burn-in counts tokens; docs/method.md). "
                f"Command: `python -m experiments.e4_comprehension{flag}` (git "
                f"{r['git_commit'][:7]}).", ""]
  return rows, section


def _passes(segment: int) -> str:
  return "token by token" if segment == 1 else f"in {segment}-token passes"


def suite_section(res: dict) -> tuple[list[str], list[str]]:
  """Last-word cloze (experiments/suite_recall.py); key-value recall is the dose study's."""
  r = res.get("suite_recall")
  if not r:
    return [], []
  rows, section = [], ["## Suite: last-word cloze, paired with off", ""]
  t = r["cloze"]
  off = t["summary"]["off"]["accuracy"]["mean"]
  title = "last-word cloze (greedy accuracy)"
  section += [f"**{title}**: {t['n_items']} items ({t['data']}), off {100 * off:.1f}%; "
              f"CIs resample {t['n_chapters']} chapters.", "", *CHOICE_TABLE]
  rows.append(f"{title}: off {100 * off:.1f}% ({t['n_items']} passages, {t['n_chapters']} "
              "chapters)")
  _choice_rows(t, section, rows)
  section += ["", f"{r['seeds']} seeds, contexts read {_passes(r['segment'])}. Command: "
              f"`python -m experiments.suite_recall` (git {r['git_commit'][:7]}). Key-value "
              "recall is the dose-response study's kv task (above).", ""]
  rows.append("key-value recall: the dose-response study's kv task (below)")
  return rows, section


def e5_section(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e5_sweeps")
  if not r:
    return [], []
  section = ["## E5: sweeps of K and lambda (preset seed otherwise)", "",
             "| axis | value | NLL change (nats/token) | 95% t CI (windows) | MDE | Holm p | "
             "seed std of NLL | finite rows | realised \\|feedback\\| / residual | winner's share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
  for row in r["rows"]:
    test, act = row["vs_off"], row["activity"]
    section.append(f"| {row['axis']} | {row['value']} | {test['mean_diff']:+.5f} | "
                   f"{ci_text(test['t_ci95'], '{:+.5f}')} | {test['mde']:.5f} | "
                   f"{test['p_holm']:.3f} | {row['seed_std']:.5f} | "
                   f"{100 * row['finite_share']:.0f}% | {act['feedback_ratio_mean']:.4f} | "
                   f"{act['winner_share']:.2f} |")
  by = lambda axis: [x for x in r["rows"] if x["axis"] == axis]
  rows = [f"{axis}: NLL change {part[0]['vs_off']['mean_diff']:+.4f} ({axis}={part[0]['value']}) "
          f"to {part[-1]['vs_off']['mean_diff']:+.4f} nats/token ({axis}={part[-1]['value']}), "
          f"{r['clusters']} windows; seed std {part[0]['seed_std']:.4f} to "
          f"{part[-1]['seed_std']:.4f}; {finite_words(part)}"
          for axis in ("K", "lambda") if (part := by(axis))]
  section += ["", f"Data: {r['data']}, each window read token by token with a fresh memory; "
              f"{r['seeds']} seeds per window (they vary only the initial noise); off's NLL "
              f"{r['baseline_nll']:.3f} nats/token. Comparisons paired over windows; Holm over "
              f"the table. Command: `python -m experiments.e5_sweeps` (git {r['git_commit'][:7]}).", ""]
  section += [f"![{p}](results/{pathlib.Path(p).name})" for p in r["plots"]] + [""]
  return rows, section


def finite_words(rows: list[dict]) -> str:
  worst = min(row["finite_share"] for row in rows)
  return "every row finite" if worst == 1.0 else f"as few as {100 * worst:.0f}% of rows finite"


def e6_section(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("e6_topics")
  if not r:
    return [], []
  off = r["summary"]["off"]["mean"]
  section = ["## E6: topic switch (snap-back), dead attractors, read-out", "",
             "| preset | snap-back share | diff vs off | 95% CI | p | Holm p | MDE | dead share at end |",
             "|---|---|---|---|---|---|---|---|", f"| off | {off:.3f} | | | | | | |"]
  rows = [f"off snap-back share {off:.3f}"]
  for preset, p in r["paired_vs_off"].items():
    d = r["dead_share"][preset]["mean"]
    section.append(f"| {preset} | {r['summary'][preset]['mean']:.3f} | {p['mean_diff']:+.3f} | "
                   f"{ci_text(p['ci95'], '{:+.3f}')} | {p['p_value']:.3f} | "
                   f"{_holm_mde(p, fmt='{:.3f}')} | {d:.2f} |")
    rows.append(f"{preset}: snap-back {p['mean_diff']:+.3f} {ci_text(p['ci95'], '{:+.3f}')} "
                f"({verdict(p['ci95'], p['p_value'])}{_mde_phrase(p)}); dead {100 * d:.0f}%"
                + _gate_note(r, preset))
  first = next(iter(r["attractor_readout_top5"].items()), None)
  dropped = {k: v for k, v in r.get("items_without_a_window", {}).items() if v}
  clusters = {p.get("clusters") for p in r["paired_vs_off"].values()} - {None}
  section += ["", f"{r['n_items']} items ({len(r['data'])} topic pairs x {r['seeds']} seeds), "
              f"{r['max_new_tokens']} tokens; CIs resample topic pairs; Holm over the presets"
              + ("; items whose continuation ended before one 50-token window are left out ("
                 + ", ".join(f"{k} {v}" for k, v in dropped.items()) + "), leaving "
                 + "-".join(str(c) for c in sorted(clusters)) + " topic pairs per comparison"
                 if dropped and clusters else "")
              + ". Command: `python -m experiments.e6_topics` (git "
              f"{r.get('git_commit', '?')[:7]}).", ""]
  if first:
    section += [f"Attractor read-out (top 5 tokens of each attractor through the unembedding), "
                f"{first[0]}, seed 0:", ""]
    section += [f"- {' '.join(repr(t) for t in toks)}" for toks in first[1]] + [""]
  return rows, section


def trajectories_section(res: dict) -> tuple[list[str], list[str]]:
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
              "Command: `python -m experiments.e3_generation --trajectories "
              "results/trajectories.json` (E3's rows for this prompt).", ""]
  section += [f"![{pathlib.Path(p).stem}](results/{pathlib.Path(p).name})" for p in r["plots"]]
  return [], section + [""]
