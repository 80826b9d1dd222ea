"""`attractor-jax bench [--model M]`: decode, sweep and scoring speed against this machine's
own limits (`roofline`) and against transformers, measured in one process.

After warm-up the sides are timed in a rotating order, each side taking each place in turn
(a fixed order favours some sides); medians and min-max over repeats are reported, compile
times separately. transformers (PyTorch, float32, loaded from the same files;
`bench_peer`) is the reference side, timed in this process between ours and again alone in
a separate process; it is optional (skipped when torch is not installed, and in --quick).
Seed sweeps against transformers' batched sampling run preset off (the same computation on
both sides: the prompt's pass included, the same sampler, every row `tokens` long).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import scipy.stats

import attractor_jax as aj
from attractor_jax import bench_peer, roofline
from attractor_jax.prompts import cache_length, prompt_ids
from attractor_jax.results import git_commit, machine_info, sources

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def _stats(xs):
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def paired_ratio(side: list[float], base: list[float]) -> dict:
  """The geometric mean of paired per-repeat ratios side/base, with a 95% t interval (on the
  log ratios, over repeats)."""
  logs = np.log(np.asarray(side) / np.asarray(base))
  mean = logs.mean()
  if len(logs) < 2:
    return {"ratio": float(np.exp(mean)), "ci95": [float(np.exp(mean))] * 2, "repeats": len(logs)}
  lo, hi = scipy.stats.t.interval(0.95, len(logs) - 1, loc=mean, scale=scipy.stats.sem(logs))
  return {"ratio": float(np.exp(mean)), "ci95": [float(np.exp(lo)), float(np.exp(hi))],
          "repeats": len(logs)}


def decode_ms_per_token(model, preset: str, tokens: int) -> tuple[float, float]:
  g = aj.generate(model, PROMPT, tokens, memory=aj.presets[preset])
  return 1e3 * g.timing["decode_s"] / max(len(g.tokens) - 1, 1), g.timing["compile_s"]


SAMPLER = dict(temperature=0.8, top_p=0.95)  # the seed sweeps' sampler

TARGETS = {  # ratio: (direction, target)
    "decode_tokens_per_s_vs_transformers": (">=", 2.5),
    "decode_tokens_per_s_vs_transformers_separate_process": (">=", 2.5),
    "decode_ms_per_token_vs_bandwidth_limit": ("<=", 1.2),
    "decode_time_seed_vs_off_ci95_upper": ("<=", 1.01),
    "decode_time_multiscale_vs_off_ci95_upper": ("<=", 1.01),
    "sweep_16_vs_transformers": (">=", 2.5),
    "sweep_64_vs_transformers": (">=", 2.5),
    "sweep_16_vs_transformers_separate_process": (">=", 2.5),
    "sweep_64_vs_transformers_separate_process": (">=", 2.5),
    "sweep_wall_16_vs_1_seed": ("<=", 2.0),
    "sweep_wall_64_vs_1_seed": ("<=", 5.0),
    "sweep_16_rows_compute_fraction": (">=", 0.6),
    "sweep_64_rows_compute_fraction": (">=", 0.6),
    "scoring_compute_fraction": (">=", 0.6),
    "scoring_tokens_per_s_vs_transformers": (">=", 1.0),
}


def run(spec: str = "smollm2-135m", quick: bool = False, progress=lambda msg: None) -> dict:
  """Measures every ratio of TARGETS on the model `spec`; returns the bench JSON."""
  repeats, tokens, many = (2, 16, (2, 4)) if quick else (10, 128, (16, 64))
  model = aj.load(spec)
  progress("roofline")
  weight_bytes = roofline.bytes_read_per_token(model.params)
  bandwidth = roofline.gemv_bandwidth_gbs()
  limit_ms = 1e3 * weight_bytes / (bandwidth * 1e9)
  gflops = {rows: roofline.matmul_gflops(model.params, rows) for rows in (1, 16, 64, 256)}
  peak, flops = max(gflops.values()), roofline.flops_per_token(model.params)
  progress("warm-up")
  compile_s = {p: decode_ms_per_token(model, p, tokens)[1] for p in ("off", "seed", "multiscale")}
  hf = None if quick else bench_peer.load_hf(spec)
  ids = prompt_ids(model, PROMPT).tolist()
  if hf is not None:
    bench_peer.decode_ms_per_token(hf, ids, 4)
  times = {"off": [], "seed": [], "multiscale": [], "transformers": []}
  for r in range(repeats):  # each side takes each place in the order in turn
    progress(f"decode repeat {r + 1}/{repeats}")
    sides = ["off", "seed", "multiscale"] + (["transformers"] if hf and r % 2 == 0 else [])
    for side in sides[r % len(sides):] + sides[:r % len(sides)]:
      times[side].append(bench_peer.decode_ms_per_token(hf, ids, tokens)
                         if side == "transformers" else decode_ms_per_token(model, side, tokens)[0])
  progress("seed sweeps")
  sweep = _sweep_seconds(model, tokens, (1, *many), max(repeats // 2, 1))
  sweep_s = {seeds: statistics.median(ts) for seeds, ts in sweep.items()}
  peer = _peer(model, hf, ids, tokens, (1, *many), 3) if hf is not None else None
  alone = _peer_alone(spec, ids, tokens, (1, *many), 2) if hf is not None else None
  progress("perplexity scoring")
  score_s = _scoring_seconds(model, hf, *((1, 1) if quick else (3, 4)))
  med = {k: statistics.median(v) for k, v in times.items() if v}
  overhead = {p: paired_ratio(times[p], times["off"]) for p in ("seed", "multiscale")}
  achieved = lambda rows, seconds: rows * tokens * flops / seconds / 1e9
  vs_peer = lambda rows, side: (None if side is None else
                                side["transformers"][rows] / side["ours"][rows])
  ratios = {
      "decode_tokens_per_s_vs_transformers": (med["transformers"] / med["off"]
                                              if "transformers" in med else None),
      "decode_tokens_per_s_vs_transformers_separate_process": (
          None if alone is None else alone["decode_ms_per_token"] / med["off"]),
      "decode_ms_per_token_vs_bandwidth_limit": med["off"] / limit_ms,
      "decode_time_seed_vs_off_ci95_upper": overhead["seed"]["ci95"][1],
      "decode_time_multiscale_vs_off_ci95_upper": overhead["multiscale"]["ci95"][1],
      "sweep_16_vs_transformers": vs_peer(many[0], peer),
      "sweep_64_vs_transformers": vs_peer(many[1], peer),
      "sweep_16_vs_transformers_separate_process": (
          None if alone is None else alone["sample_s"][many[0]] / peer["ours"][many[0]]),
      "sweep_64_vs_transformers_separate_process": (
          None if alone is None else alone["sample_s"][many[1]] / peer["ours"][many[1]]),
      "sweep_wall_16_vs_1_seed": sweep_s[many[0]] / sweep_s[1],
      "sweep_wall_64_vs_1_seed": sweep_s[many[1]] / sweep_s[1],
      "sweep_16_rows_compute_fraction": achieved(many[0], sweep_s[many[0]]) / peak,
      "sweep_64_rows_compute_fraction": achieved(many[1], sweep_s[many[1]]) / peak,
      "scoring_compute_fraction": 512 * flops / score_s["ours"] / 1e9 / peak,
      "scoring_tokens_per_s_vs_transformers": (score_s["transformers"] / score_s["ours"]
                                               if "transformers" in score_s else None),
  }
  met = {k: (None if ratios[k] is None else (ratios[k] >= t if op == ">=" else ratios[k] <= t))
         for k, (op, t) in TARGETS.items()}
  return {
      "quick": quick, "model": model.spec, "machine": machine_info(), "git_commit": git_commit(),
      "sources": sources(),
      "tokens": tokens, "repeats": repeats, "sweep_seeds": [1, *many], "sampler": SAMPLER,
      "roofline": {"matmul_gflops_by_rows": {str(k): v for k, v in gflops.items()},
                   "peak_gflops": peak, "flops_per_token": flops,
                   "gemv_bandwidth_gbs": bandwidth, "weight_bytes": weight_bytes,
                   "bandwidth_limit_ms_per_token": limit_ms},
      "decode_ms_per_token": {k: _stats(v) for k, v in times.items() if v},
      "overhead_vs_off": overhead, "compile_s": compile_s, "scoring_s_per_512_window": score_s,
      "sweep_wall_s": {str(k): _stats(v) for k, v in sweep.items()},
      "peer_sample_s": None if peer is None else {
          side: {str(k): v for k, v in by_rows.items()} for side, by_rows in peer.items()},
      "peer_separate_process": alone,
      "cache_len": cache_length(model, len(ids), tokens), "ratios": ratios,
      "targets": {k: f"{op} {t}" for k, (op, t) in TARGETS.items()}, "met": met,
  }


def _sweep_seconds(model, tokens: int, seeds_list, repeats: int) -> dict:
  """Wall seconds of `aj.generate_seeds` (preset seed, greedy) by seed count, after a
  warm-up call of each; the counts alternate order over repeats."""
  run = lambda seeds: aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"],
                                        seeds=seeds)
  sweep = {seeds: [] for seeds in seeds_list}
  for seeds in sweep:
    run(seeds)
  for r in range(repeats):
    for seeds in sweep if r % 2 == 0 else reversed(sweep):
      t = time.perf_counter()
      run(seeds)
      sweep[seeds].append(time.perf_counter() - t)
  return sweep


def _peer(model, hf, ids, tokens: int, rows_list, repeats: int) -> dict:
  """Median wall seconds by row count of ours (preset off, `aj.generate_seeds`) and
  transformers' batched sampling, alternated in this process. Ours counts the decode steps
  it ran (rows that sampled EOS stop, the loop does not), so the ratio is per token."""
  ours = lambda rows: aj.generate_seeds(model, PROMPT, tokens, memory=None, seeds=rows,
                                        **SAMPLER)
  theirs = lambda rows: bench_peer.generate_seconds(hf, ids, rows, tokens, **SAMPLER)
  seconds = {"ours": {r: [] for r in rows_list}, "transformers": {r: [] for r in rows_list}}
  for r in rows_list:
    ours(r)
  for i in range(repeats):
    for rows in rows_list:
      for side in (("ours", "transformers") if i % 2 == 0 else ("transformers", "ours")):
        if side == "transformers":
          seconds[side][rows].append(theirs(rows))
          continue
        t = time.perf_counter()
        runs = ours(rows)
        steps = max(len(row) for row in runs.tokens)
        seconds[side][rows].append((time.perf_counter() - t) * tokens / steps)
  return {side: {r: statistics.median(v) for r, v in by_rows.items()}
          for side, by_rows in seconds.items()}


def _peer_alone(spec: str, ids, tokens: int, rows_list, repeats: int) -> dict:
  """transformers timed alone in a separate process (`bench_peer`): nothing of ours loaded."""
  out = subprocess.run(
      [sys.executable, "-m", "attractor_jax.bench_peer", "--model", spec,
       "--ids", ",".join(map(str, ids)), "--rows", ",".join(map(str, rows_list)),
       "--tokens", str(tokens), "--repeats", str(repeats),
       "--temperature", str(SAMPLER["temperature"]), "--top-p", str(SAMPLER["top_p"])],
      check=True, capture_output=True, text=True)
  result = json.loads(out.stdout)
  result["sample_s"] = {int(k): v for k, v in result["sample_s"].items()}
  return result


def _scoring_seconds(model, hf, repeats: int, n_windows: int) -> dict:
  """Median seconds per 512-token window, over calls that score `n_windows` of them: ours
  (jitted) vs a transformers forward."""
  from attractor_jax.data import pride_and_prejudice_from_truth
  from attractor_jax.scoring import text_windows, window_nll

  windows = text_windows(model, pride_and_prejudice_from_truth(), 512, 512 * n_windows)
  window_nll(model, windows)
  ours, theirs = [], []
  for _ in range(repeats):
    t = time.perf_counter()
    window_nll(model, windows)
    ours.append((time.perf_counter() - t) / len(windows))
    if hf is not None:
      import torch
      with torch.no_grad():
        t = time.perf_counter()
        for w in windows:
          hf(torch.tensor(w[None], dtype=torch.long))
        theirs.append((time.perf_counter() - t) / len(windows))
  out = {"ours": statistics.median(ours)}
  if theirs:
    out["transformers"] = statistics.median(theirs)
  return out


MARKDOWN_HEADER = "| measure | ratio | target | met |"


def markdown(result: dict) -> str:
  lines = [MARKDOWN_HEADER, "|---|---|---|---|"]
  for k, v in result["ratios"].items():
    shown = "n/a" if v is None else f"{v:.3f}"
    lines.append(f"| {k} | {shown} | {result['targets'][k]} | {result['met'][k]} |")
  return "\n".join(lines)
