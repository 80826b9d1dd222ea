"""`python -m experiments.report`: builds RESULTS.md from results/*.json (nothing typed by hand).

First the seed's claims beside ours, then a section per experiment, then conclusions that
follow from the numbers (a CI that spans zero is reported as "no detectable change";
p-values are always shown). Experiments without a result file are listed as not yet measured.

Sections live by topic: `experiments` (E1, E3-E6, the suite's recall tasks, trajectories),
`performance` (E2, growth), `memories` (E7, calibration), `conclusions`; `format` holds the
shared CI and verdict formatting.
"""

from __future__ import annotations

import json
import pathlib

from attractor_jax.writing import write_text_atomic
from experiments.report.conclusions import conclude
from experiments.report.experiments import (e1_section, e3_section, e4_section, e5_section,
                                              e6_section, suite_section, trajectories_section)
from experiments.report.memories import (MEMORIES, calibration_section, memories_section,
                                           memory_table)
from experiments.report.performance import compute_section, e2_section, growth_section
from experiments.report.scaling import scaling_rows, scaling_section
from experiments.report.study import recall_rows, studies, study_section

__all__ = ["CLAIMS", "MEMORIES", "build", "first_round_note", "memory_table", "write"]

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


MIN_CLUSTERS = 24  # the floor for a comparison's independent clusters

# first-round result files with a `gated` row (each records its gate since this round)
FIRST_ROUND_WITH_GATED = ("e1_ppl_gated", "e3_generation", "e6_topics", "e4_comprehension",
                          "suite_recall")


def first_round_note(res: dict) -> list[str]:
  """Under the claims table, once the study has results: what supersedes the first round's
  rows, and which of its files never recorded whether `gated`'s gate opened."""
  found = studies(res)
  if not found:
    return []
  clusters = sorted(s["clusters"] for s in found.values())
  thin = _thin_rows(res)
  text = (f"These rows are the seed's presets as specified, each experiment's own design. The "
          f"dose-response study below ({len(found)} result files on "
          f"{len({s['model'] for s in found.values()})} models, {clusters[0]} to {clusters[-1]} "
          "clusters per comparison, feedback sized against the residual stream, open and closed "
          "loop, gates recorded) " + (f"supersedes {thin}" if thin else
                                       "stands beside them (E1's windows and E7's prompts, the "
                                       f"first round's thin rows, now number at least {MIN_CLUSTERS})")
          + "; its answers to the seed's questions come first.")
  unrecorded = [k for k in FIRST_ROUND_WITH_GATED if k in res and not _records_gate(res[k])]
  if unrecorded:
    text += (" Whether `gated`'s gate opened is not recorded in " + ", ".join(
        f"`{k}`" for k in unrecorded) + ": their gated rows are not evidence that it acted; "
        "where it is recorded it stands beside the figures.")
  return [text, ""]


def _thin_rows(res: dict) -> str:
  """The first-round rows with fewer than MIN_CLUSTERS clusters (E1's windows, E7's prompts)."""
  e1, e7 = res.get("e1_ppl_seed"), res.get("e7_generation")
  windows = e1["tokens"] // e1["window"] if e1 else MIN_CLUSTERS
  parts = ([f"E1 ({windows} windows)"] if windows < MIN_CLUSTERS else []) + (
      [f"E7's perplexity and generation columns ({len(e7['data'])} prompts)"]
      if e7 and len(e7["data"]) < MIN_CLUSTERS else [])
  return " and ".join(parts)


def _records_gate(result: dict) -> bool:
  """The file records gate openness (at its top or in one of its tasks)."""
  return "gate_open" in result or any("gate_open" in v for v in result.values()
                                      if isinstance(v, dict))


def _load(results: pathlib.Path) -> dict[str, dict]:
  return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def build(results_dir: str | pathlib.Path = "results") -> str:
  """The text of RESULTS.md."""
  results = pathlib.Path(results_dir)
  res = _load(results)
  e3 = e3_section(res)
  parts = {"E1": e1_section(res), "E2": e2_section(res),
           "E3": (e3[0] + recall_rows(res) + scaling_rows(res), e3[1]), "E4": e4_section(res),
           "E5": e5_section(res), "E6": e6_section(res), "trajectories": trajectories_section(res),
           "E7": memories_section(res), "Suite": suite_section(res),
           "calibration": calibration_section(res), "growth": growth_section(res)}
  lines = ["# Results", "", "Generated by `python -m experiments.report` from `results/*.json`; every "
           "number below is in one of those files, with the command that produced it.", "",
           "## The seed's claims beside ours", "", "| # | seed's claim | ours |", "|---|---|---|"]
  for key, claim in CLAIMS.items():
    rows = parts.get(key, ([], []))[0]
    lines.append(f"| {key} | {claim} | {'<br>'.join(rows) if rows else 'not yet measured'} |")
  lines.append("")
  lines += first_round_note(res)
  if "run_all" in res and not res["run_all"]["quick"]:
    r = res["run_all"]
    parts_min = ", ".join(f"{name} {s / 60:.1f}" for name, s in r["experiment_wall_s"].items())
    lines += [f"The suite (`python -m experiments.run_all`) ran end to end in "
              f"{r['wall_s'] / 60:.0f} minutes on {r['machine']['cpus']} CPUs, "
              f"{r['machine']['platform']} (git {r['git_commit'][:7]}; minutes per part, "
              f"{_at_once(r.get('experiments_at_once', 1))}, then the bench alone: "
              f"{parts_min}).", ""]
  lines += study_section(res)
  lines += scaling_section(res)
  lines += compute_section(res)
  for _, section in parts.values():
    lines += section
  conclusions = conclude(res)
  if conclusions:
    lines += ["## What we conclude", ""] + [f"- {c}" for c in conclusions] + [""]
  return "\n".join(lines) + "\n"


def _at_once(n: int) -> str:
  return "experiments one at a time" if n == 1 else f"{n} experiments at a time"


def write(results_dir: str | pathlib.Path = "results", out: str | pathlib.Path = "RESULTS.md"):
  write_text_atomic(out, build(results_dir), first_line="# Results")
