"""`attractor-jax bench [--model M]`: decode, sweep and scoring speed against this machine's
own limits (`roofline`) and against transformers, measured in one process.

After warm-up the sides are timed in a rotating order, each side taking each place in turn
(a fixed order favours some sides); medians and min-max over repeats are reported, compile
times separately. transformers (PyTorch, float32, loaded from the same files) is the
reference side; it is optional (skipped when torch is not installed).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import scipy.stats

import attractor_jax as aj
from attractor_jax import roofline
from attractor_jax.prompts import cache_length, prompt_ids
from attractor_jax.results import git_commit, machine_info

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


def hf_ms_per_token(hf, ids, tokens: int) -> float:
  import torch
  with torch.no_grad():
    t = time.perf_counter()
    out = hf.generate(torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens,
                      do_sample=False)
    dt = time.perf_counter() - t
  return 1e3 * dt / (out.shape[1] - len(ids))


def load_hf(spec: str):
  """The same model in transformers (float32), or None when torch is missing."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  from attractor_jax.model import gguf_path

  path = gguf_path(spec)
  if path is not None:
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  return transformers.AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32).eval()


TARGETS = {  # ratio: (direction, target)
    "decode_tokens_per_s_vs_transformers": (">=", 2.0),
    "decode_ms_per_token_vs_bandwidth_limit": ("<=", 1.3),
    "decode_time_seed_vs_off_ci95_upper": ("<=", 1.01),
    "decode_time_multiscale_vs_off_ci95_upper": ("<=", 1.01),
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
  hf = None if quick else load_hf(spec)
  ids = prompt_ids(model, PROMPT).tolist()
  if hf is not None:
    hf_ms_per_token(hf, ids, 4)
  times = {"off": [], "seed": [], "multiscale": [], "transformers": []}
  for r in range(repeats):  # each side takes each place in the order in turn
    progress(f"decode repeat {r + 1}/{repeats}")
    sides = ["off", "seed", "multiscale"] + (["transformers"] if hf and r % 2 == 0 else [])
    for side in sides[r % len(sides):] + sides[:r % len(sides)]:
      times[side].append(hf_ms_per_token(hf, ids, tokens) if side == "transformers" else
                         decode_ms_per_token(model, side, tokens)[0])
  progress("seed sweeps")
  sweep = {seeds: [] for seeds in (1, *many)}
  for seeds in sweep:
    aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
  for r in range(max(repeats // 2, 1)):
    for seeds in sweep if r % 2 == 0 else reversed(sweep):
      t = time.perf_counter()
      aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
      sweep[seeds].append(time.perf_counter() - t)
  sweep_s = {seeds: statistics.median(ts) for seeds, ts in sweep.items()}
  progress("perplexity scoring")
  score_s = _scoring_seconds(model, hf, 1 if quick else 3)
  med = {k: statistics.median(v) for k, v in times.items() if v}
  overhead = {p: paired_ratio(times[p], times["off"]) for p in ("seed", "multiscale")}
  achieved = lambda rows, seconds: rows * tokens * flops / seconds / 1e9
  ratios = {
      "decode_tokens_per_s_vs_transformers": (med["transformers"] / med["off"]
                                              if "transformers" in med else None),
      "decode_ms_per_token_vs_bandwidth_limit": med["off"] / limit_ms,
      "decode_time_seed_vs_off_ci95_upper": overhead["seed"]["ci95"][1],
      "decode_time_multiscale_vs_off_ci95_upper": overhead["multiscale"]["ci95"][1],
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
      "tokens": tokens, "repeats": repeats, "sweep_seeds": [1, *many],
      "roofline": {"matmul_gflops_by_rows": {str(k): v for k, v in gflops.items()},
                   "peak_gflops": peak, "flops_per_token": flops,
                   "gemv_bandwidth_gbs": bandwidth, "weight_bytes": weight_bytes,
                   "bandwidth_limit_ms_per_token": limit_ms},
      "decode_ms_per_token": {k: _stats(v) for k, v in times.items() if v},
      "overhead_vs_off": overhead, "compile_s": compile_s, "scoring_s_per_512_window": score_s,
      "sweep_wall_s": {str(k): _stats(v) for k, v in sweep.items()},
      "cache_len": cache_length(model, len(ids), tokens), "ratios": ratios,
      "targets": {k: f"{op} {t}" for k, (op, t) in TARGETS.items()}, "met": met,
  }


def _scoring_seconds(model, hf, repeats: int) -> dict:
  """Median seconds to score one 512-token window: ours (jitted) vs a transformers forward."""
  from attractor_jax.data import pride_and_prejudice_from_truth
  from attractor_jax.scoring import text_windows, window_nll

  windows = text_windows(model, pride_and_prejudice_from_truth(), 512, 2048)
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
