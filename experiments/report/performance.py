"""The performance sections: E2 (overhead, the bench's targets, roofline, kernels) and growth
curves."""

from __future__ import annotations

import pathlib


def e2_section(res: dict) -> tuple[list[str], list[str]]:
  b = res.get("bench")
  if not b:
    return [], []
  r, ms, roof = b["ratios"], b["decode_ms_per_token"], b["roofline"]
  pct = lambda x: f"{100 * (x - 1):+.1f}%"
  overhead = "; ".join(
      f"{p}: {pct(o['ratio'])} [{pct(o['ci95'][0])}, {pct(o['ci95'][1])}]"
      for p, o in b["overhead_vs_off"].items())
  rows = [f"decode time vs off, paired over {b['repeats']} alternated repeats (95% CI): "
          f"{overhead}; off itself ranged {ms['off']['min']:.1f}-{ms['off']['max']:.1f} ms/token"]
  growth = res.get("growth")
  if growth:
    ks = growth["overhead_vs_K"]
    rows.append(f"growth run: seed / off {ks[0]['vs_off']:.3f} (K={ks[0]['K']}) to "
                f"{ks[-1]['vs_off']:.3f} (K={ks[-1]['K']}), {growth['repeats']} repeats, git "
                f"{growth['git_commit'][:7]}")
  section = ["## E2: compute overhead (jitted decode, same run)", "",
             "| side | ms/token (median) | min | max |", "|---|---|---|---|"]
  section += [f"| {k} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |" for k, v in ms.items()]
  rates = ", ".join(f"{k} rows {v:.0f}" for k, v in roof["matmul_gflops_by_rows"].items())
  section += ["", f"Bandwidth limit: {roof['bandwidth_limit_ms_per_token']:.1f} ms/token "
              f"({roof['weight_bytes'] / 1e6:.0f} MB of weights at "
              f"{roof['gemv_bandwidth_gbs']:.1f} GB/s). Matrix-multiply rate at the model's "
              f"shapes, GFLOP/s: {rates} (peak {roof['peak_gflops']:.0f}; "
              f"{roof['flops_per_token'] / 1e9:.2f} GFLOP per token). "
              f"Machine: {b['machine']['cpus']} CPUs, {b['machine']['platform']}; code at git "
              f"{b['git_commit'][:7]}. Command: `attractor-jax bench`.", "",
              "| performance target | measured | target | met |", "|---|---|---|---|"]
  for name, ratio in r.items():
    shown = "n/a" if ratio is None else f"{ratio:.3f}"
    section.append(f"| {name} | {shown} | {b['targets'][name]} | {b['met'][name]} |")
  kernels = res.get("decode_kernels")
  if kernels:
    section += ["", "What each decode change bought, per kernel (`python -m "
                f"experiments.decode_kernels`, git {kernels['git_commit'][:7]}; medians of "
                f"{_repeats(kernels['repeats'])}; the script's docstring says what each row "
                "compares):", "",
                "| kernel | before ms | after ms | saved ms |", "|---|---|---|---|"]
    section += [f"| {k}{_own_commit(v)} | {v['before_ms']:.2f} | {v['after_ms']:.2f} | "
                f"{v['saved_ms']:.2f} |" for k, v in kernels["rows"].items()]
    if "breakdown" in kernels:
      section += breakdown_table(kernels["breakdown"])
  return rows, section + [""]


def _own_commit(row: dict) -> str:
  """' (git abc1234)' for a row measured later than the file's other rows."""
  return f" (git {row['git_commit'][:7]})" if "git_commit" in row else ""


def breakdown_table(breakdown: dict) -> list[str]:
  """One decode step split into parts, before and after the last change (ms per step)."""
  names = list(breakdown["after"][0]["parts_ms"])
  lines = ["", f"One decode step in parts (ms; seed preset, top-p sampling, 256-slot cache; "
           f"git {breakdown['git_commit'][:7]}; `breakdown` in the script's docstring). The "
           "before and after blocks ran minutes apart: compare parts within a block; across "
           "blocks only where the unchanged products moved little:", "",
           "| code | rows | step | " + " | ".join(names) + " | products GFLOP/s |",
           "|---|---|---|" + "---|" * len(names) + "---|"]
  for when in ("before", "after"):
    for b in breakdown.get(when, []):
      parts = " | ".join(f"{b['parts_ms'][n]:.1f}" for n in names)
      lines.append(f"| {when} | {b['rows']} | {b['step_ms']:.1f} | {parts} | "
                   f"{b['products_gflops']:.0f} |")
  return lines


def _repeats(repeats: dict) -> str:
  """'30 calls (10 for 64-row sampling, 3 for 8-seed decode)'."""
  rest = ", ".join(f"{n} for {name}" for name, n in repeats.items() if name != "default")
  return f"{repeats['default']} calls ({rest})"


def growth_section(res: dict) -> tuple[list[str], list[str]]:
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
             f"machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}; code at git "
             f"{r['git_commit'][:7]}. Command: `python -m experiments.growth` (run alone).", ""]
  section += [f"![{pathlib.Path(p).stem}](results/{pathlib.Path(p).name})" for p in r["plots"]]
  return [], section + [""]


STUDY_FILES = ("dose_", "e1_", "e3_", "e4_", "e5_", "e6_", "e7_", "suite_", "calibration")
STUDY_BUDGET_H = 4  # issue 19: the whole study within 4 hours of compute


def recorded_seconds(result: dict) -> float | None:
  """A result file's cost as it recorded it: its wall time, or the dose study's arms' seconds
  summed; None where it recorded neither."""
  if "wall_s" in result:
    return float(result["wall_s"])
  arms = result.get("arms")
  if isinstance(arms, dict) and all("seconds" in a for a in arms.values()):
    return float(sum(a["seconds"] for a in arms.values()))
  return None


def compute_section(res: dict) -> list[str]:
  """What the study's result files cost, as recorded, against the budget."""
  study = {name: r for name, r in res.items() if name.startswith(STUDY_FILES) and not r.get("quick")}
  timed = {name: s for name, r in study.items() if (s := recorded_seconds(r)) is not None}
  if not timed:
    return []
  hours = sum(timed.values()) / 3600
  lines = ["## Compute the study cost", "",
           f"Recorded by the result files: **{hours:.1f} hours** (budget {STUDY_BUDGET_H} hours; "
           f"{'within' if hours <= STUDY_BUDGET_H else 'over'} it). Wall time per file, or the "
           "sum of its arms' seconds (dose study); a run beside another job took longer than it "
           "would alone.", "", "| result file | minutes | git |", "|---|---|---|"]
  for name, seconds in sorted(timed.items(), key=lambda kv: -kv[1]):
    lines.append(f"| {name} | {seconds / 60:.1f} | {study[name].get('git_commit', '?')[:7]} |")
  untimed = sorted(set(study) - set(timed))
  if untimed:
    lines += ["", "No time recorded: " + ", ".join(f"`{n}`" for n in untimed) + "."]
  return lines + [""]
