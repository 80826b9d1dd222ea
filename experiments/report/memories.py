"""The related-work memories (E7) and the calibration of their strengths."""

from __future__ import annotations

import pathlib

import numpy as np

from attractor_jax import stats
from experiments.report.format import ci_text, table_cell

# Related-work memories (issue 6): reported in their own section, not as the seed's presets.
MEMORIES = ("cache", "hopfield", "steering", "fastweights", "dynamic-eval")


def _ppl_paired(r: dict | None) -> dict | None:
  if r is None:
    return None
  return {"mean_diff": r["delta_pct"], "ci95": r["delta_pct_ci95"], "p_value": r.get("p_value")}


def _emma_prompts(res: dict) -> str:
  """How many of E3's and E7's generation prompts open a chapter of Emma."""
  counts = [f"{name} {sum('emma' in d for d in r['data'])} of {len(r['data'])}"
            for name, r in (("E3", res.get("e3_generation")), ("E7", res.get("e7_generation")))
            if r]
  return ", ".join(counts + ["the trajectories' only prompt"])


ATTRACTOR_ROWS = ("seed", "tuned")  # the attractor layer's rows beside the memories


def ppl_against_cache(res: dict) -> dict[str, dict]:
  """Each attractor row's perplexity paired with the cache's on E1's windows (same tokens):
  per window, the NLL per token of the row minus the cache's (`stats.cluster_comparison`)."""
  cache = res.get("e1_ppl_cache")
  out = {}
  for name in ATTRACTOR_ROWS:
    row = res.get(f"e1_ppl_{name}")
    if cache and row and row["window_nll_baseline"] == cache["window_nll_baseline"]:
      diff_W = (np.asarray(row["window_nll"]) - np.asarray(cache["window_nll"])) / (row["window"] - 1)
      out[name] = stats.cluster_comparison(diff_W)
  return out


def _commits(res: dict) -> str:
  """The commits E7's files ran at (one, when the table was run as one)."""
  names = [f"e1_ppl_{m}" for m in (*ATTRACTOR_ROWS, *MEMORIES)] + [
      "e7_generation", "e7_comprehension", "e7_topics"]
  commits = sorted({res[n]["git_commit"][:7] for n in names if "git_commit" in res.get(n, {})})
  return ("one commit, " if len(commits) == 1 else "commits ") + ", ".join(commits)


def memory_table(res: dict) -> list[dict[str, dict | None]]:
  """One row per attractor preset and memory: each suite metric paired vs off, looked up in
  E7's files first, then in the E1/E4/E6 files (the same settings) for the attractor rows,
  where they read the same items as E7's file."""
  def pick(name, metric, e7_file, fallback=None):
    files = [e7_file, f"{e7_file}_tuned"]
    if fallback in res and res[fallback]["data"] == (res.get(e7_file) or {}).get("data"):
      files.append(fallback)
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
        "accuracy (points)": pick(name, "accuracy", "e7_comprehension", "e4_comprehension"),
        "snap-back": pick(name, None, "e7_topics", "e6_topics")})
  return rows


def column_holm(table: list[dict], metrics: list[str]) -> dict[str, list[float]]:
  """Per metric, each row's Holm-adjusted p over the rows that have that metric (1.0 where a
  row has none)."""
  out = {}
  for m in metrics:
    present = [i for i, row in enumerate(table) if row[m] and row[m].get("p_value") is not None]
    adjusted = stats.holm([table[i][m]["p_value"] for i in present]) if present else []
    out[m] = [1.0] * len(table)
    for i, p in zip(present, adjusted):
      out[m][i] = p
  return out


def memories_section(res: dict) -> tuple[list[str], list[str]]:
  if not any(k in res for k in ("e7_generation", "e7_comprehension", "e7_topics")) and not any(
      f"e1_ppl_{m}" in res for m in MEMORIES):
    return [], []
  table = memory_table(res)
  metrics = [k for k in table[0] if k != "memory"]
  section = ["## E7: related-work memories on the same suite, paired with off", "",
             "Each cell: mean difference vs off [95% bootstrap CI]; **bold** where the CI excludes 0 "
             "and the Holm-adjusted p over the column's rows is below 0.05. "
             "Rows: the attractor layer (presets seed and tuned = seed at the calibrated alpha) "
             "and the five related-work memories (`attractor_jax/memories/`, presets of the same "
             "names, strengths calibrated on *Emma*).", "",
             "| memory | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
  holm = column_holm(table, metrics)
  for i, row in enumerate(table):
    cells = [table_cell(row[m], 100.0 if m.startswith("accuracy") else 1.0, p_holm=holm[m][i])
             for m in metrics]
    section.append(f"| {row['memory']} | " + " | ".join(cells) + " |")
  gen, comp, top = (res.get(k) for k in ("e7_generation", "e7_comprehension", "e7_topics"))
  notes = []
  if any(f"e1_ppl_{m}" in res for m in MEMORIES):
    e1 = res.get("e1_ppl_cache") or {}
    notes.append(f"ppl: E1's text and {e1.get('windows', 'its')} windows, token by token, 1 seed "
                 "for the memories (no random init), 8 for the attractor rows; CI over windows")
  if gen:
    notes.append(f"generation: {gen['n_items']} items ({len(gen['data'])} prompts x "
                 f"{gen['seeds']} seeds), {gen['max_new_tokens']} tokens, sampled; CIs resample prompts")
  if comp:
    e4 = res.get("e4_comprehension") or {}
    seeds = (f"{e4['seeds']} for the attractor rows (E4's file)" if e4.get("data") == comp["data"]
             else "no attractor row (E4's file read other items)")
    notes.append(f"accuracy: {comp['n_items']} comprehension items (E4's), {comp['seeds']} seed "
                 f"for the memories, {seeds}, off at "
                 f"{100 * comp['summary']['off']['accuracy']['mean']:.1f}% (chance "
                 f"{100 * comp['chance']:.0f}%)")
  if top:
    dropped = {k: v for k, v in top.get("items_without_a_window", {}).items() if v}
    same = (res.get("e6_topics") or {}).get("data") == top["data"]
    notes.append(f"snap-back: {top['n_items']} items ({len(top['data'])} topic pairs x "
                 f"{top['seeds']} seeds; " + ("seed's row from E6" if same else
                                              "no seed row: E6's file read other pairs") + ")" + (
                     ", items whose continuation stopped before one 50-token window left out: "
                     + ", ".join(f"{k} {v}" for k, v in dropped.items()) if dropped else ""))
  section += ["", "; ".join(notes) + f" ({_commits(res)}). Command: "
              "`bash experiments/e7_memories.sh`.", ""]
  against = ppl_against_cache(res)
  if against:
    section += ["Perplexity against the cache, paired on the same windows (NLL per token, row "
                "minus cache; t CI over windows): " + "; ".join(
                    f"{name} {c['mean_diff']:+.4f} {ci_text(c['t_ci95'], '{:+.4f}')} (p = "
                    f"{c['p_value']:.2g}, {c['clusters']} windows)" for name, c in against.items())
                + ".", ""]
  if gen:
    section += [f"![{what}](results/{pathlib.Path(gen[key]).name})"
                for what, key in (("repetition vs position", "plot"), ("drift", "drift_plot"))
                if gen.get(key)] + [""]
  rows = memory_answer(table)
  cache = res.get("e1_ppl_cache")
  if cache:
    rows.insert(0, f"cache: ppl {cache['delta_pct']:+.2f}% {ci_text(cache['delta_pct_ci95'])} "
                   f"over {cache['windows']} windows of E1 (attractor rows: see E1)")
  return rows, section


def memory_answer(table: list[dict]) -> list[str]:
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


def calibration_section(res: dict) -> tuple[list[str], list[str]]:
  r = res.get("calibration")
  if not r:
    return [], []
  c, st = r["cache"], r["strength"]
  b = c["best"]
  section = ["## Calibration (kept apart from evaluation)", "",
             f"Tuned on *{r['novel'].title()}* (the related-work memories' strengths and preset "
             "tuned; the seed, gated and multiscale presets keep docs/method.md's numbers). Perplexity "
             "(E1: Pride and Prejudice; E5 and the dose study: Persuasion, Northanger Abbey, Mansfield "
             "Park), comprehension and topic-switch items "
             "use other text; the generation prompts of E3/E7 and the trajectories include "
             f"Emma's openings ({_emma_prompts(res)}). "
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
