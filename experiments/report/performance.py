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
    section += [f"| {k} | {v['before_ms']:.2f} | {v['after_ms']:.2f} | {v['saved_ms']:.2f} |"
                for k, v in kernels["rows"].items()]
  return rows, section + [""]


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
