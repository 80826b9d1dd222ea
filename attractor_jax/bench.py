"""`attractor-jax bench [--model M]`: decode, sweep and scoring speed, measured in one process.

After warm-up the sides are timed in a rotating order, each side taking each place in turn
(a fixed order favours some sides); medians and min-max over repeats are reported, compile
times separately. transformers (PyTorch, float32, loaded from the same files) is the
reference side; it is optional (skipped when torch is not installed).
"""

from __future__ import annotations

import pathlib
import statistics
import time

import jax
import numpy as np

import attractor_jax as aj
from attractor_jax.prompts import cache_length, prompt_ids
from attractor_jax.results import git_commit, machine_info

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def _stats(xs):
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def gemv_bandwidth_gbs(repeats: int = 10) -> float:
  """Bytes per second a large float32 NumPy matrix-vector product reads on this machine."""
  w = np.random.default_rng(0).random((8192, 16384), np.float32)
  v = np.ones(16384, np.float32)
  w @ v
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    w @ v
    times.append(time.perf_counter() - t)
  return w.nbytes / statistics.median(times) / 1e9


def bytes_read_per_token(params) -> int:
  """Weight bytes one decode step reads: every matrix once, but of the embedding table only a
  row when the logits read a separate [D, V] matrix (an untied head or `load`'s tied copy)."""
  total = sum(a.nbytes for a in jax.tree.leaves(params))
  if "lm_head" in params:
    table = params["embed"]["embedding"]
    total -= table.nbytes - table.nbytes // table.shape[0]
  return total


def _decode_ms_per_token(model, preset: str, tokens: int) -> tuple[float, float]:
  g = aj.generate(model, PROMPT, tokens, memory=aj.presets[preset])
  return 1e3 * g.timing["decode_s"] / max(len(g.tokens) - 1, 1), g.timing["compile_s"]


def _hf_ms_per_token(hf, ids, tokens: int) -> float:
  import torch
  with torch.no_grad():
    t = time.perf_counter()
    out = hf.generate(torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens,
                      do_sample=False)
    dt = time.perf_counter() - t
  return 1e3 * dt / (out.shape[1] - len(ids))


def _load_hf(spec: str):
  """The same model in transformers (float32), or None when torch is missing."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  from attractor_jax.model import DEFAULT_MODEL, default_gguf_path

  path = default_gguf_path() if spec == DEFAULT_MODEL else pathlib.Path(spec)
  if path.suffix == ".gguf":
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  return transformers.AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32).eval()


def run(spec: str = "smollm2-135m", quick: bool = False, progress=lambda msg: None) -> dict:
  """Measures every ratio on the model `spec`; returns the bench JSON."""
  repeats, tokens = (1, 16) if quick else (5, 128)
  model = aj.load(spec)
  weight_bytes = bytes_read_per_token(model.params)
  progress("bandwidth")
  bandwidth = gemv_bandwidth_gbs()
  limit_ms = 1e3 * weight_bytes / (bandwidth * 1e9)
  progress("warm-up")
  compile_s = {p: _decode_ms_per_token(model, p, tokens)[1] for p in ("off", "seed", "multiscale")}
  hf = None if quick else _load_hf(spec)
  ids = prompt_ids(model, PROMPT).tolist()
  if hf is not None:
    _hf_ms_per_token(hf, ids, 4)
  times = {"off": [], "seed": [], "multiscale": [], "transformers": []}
  sides = [side for side in times if side != "transformers" or hf is not None]
  for r in range(repeats):  # each side takes each place in the order in turn
    progress(f"decode repeat {r + 1}/{repeats}")
    for side in sides[r % len(sides):] + sides[:r % len(sides)]:
      times[side].append(_hf_ms_per_token(hf, ids, tokens) if side == "transformers" else
                         _decode_ms_per_token(model, side, tokens)[0])
  progress("seed sweep")
  sweep = {seeds: [] for seeds in ((1, 16) if not quick else (1, 2))}
  for seeds in sweep:
    aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
  for r in range(repeats):
    for seeds in sweep if r % 2 == 0 else reversed(sweep):
      t = time.perf_counter()
      aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
      sweep[seeds].append(time.perf_counter() - t)
  sweep_s = {seeds: statistics.median(ts) for seeds, ts in sweep.items()}
  progress("perplexity scoring")
  score_s = _scoring_seconds(model, hf, 1 if quick else repeats)
  med = {k: statistics.median(v) for k, v in times.items() if v}
  ratios = {
      "decode_tokens_per_s_vs_transformers": (med["transformers"] / med["off"]
                                              if "transformers" in med else None),
      "decode_ms_per_token_vs_bandwidth_limit": med["off"] / limit_ms,
      "decode_time_seed_vs_off": med["seed"] / med["off"],
      "decode_time_multiscale_vs_off": med["multiscale"] / med["off"],
      "sweep_wall_many_vs_one_seed": sweep_s[max(sweep_s)] / sweep_s[1],
      "scoring_tokens_per_s_vs_transformers": (score_s["transformers"] / score_s["ours"]
                                               if "transformers" in score_s else None),
  }
  targets = {"decode_tokens_per_s_vs_transformers": (">=", 2.0),
             "decode_ms_per_token_vs_bandwidth_limit": ("<=", 1.5),
             "decode_time_seed_vs_off": ("<=", 1.01), "decode_time_multiscale_vs_off": ("<=", 1.01),
             "sweep_wall_many_vs_one_seed": ("<=", 3.0),
             "scoring_tokens_per_s_vs_transformers": (">=", 1.0)}
  met = {k: (None if ratios[k] is None else
             (ratios[k] >= t if op == ">=" else ratios[k] <= t)) for k, (op, t) in targets.items()}
  return {
      "quick": quick, "model": model.spec, "machine": machine_info(), "git_commit": git_commit(),
      "tokens": tokens,
      "repeats": repeats, "weight_bytes": weight_bytes, "gemv_bandwidth_gbs": bandwidth,
      "bandwidth_limit_ms_per_token": limit_ms,
      "decode_ms_per_token": {k: _stats(v) for k, v in times.items() if v},
      "compile_s": compile_s, "scoring_s_per_512_window": score_s, "sweep_wall_s": {str(k): _stats(v) for k, v in sweep.items()},
      "cache_len": cache_length(model, len(ids), tokens), "ratios": ratios,
      "targets": {k: f"{op} {t}" for k, (op, t) in targets.items()}, "met": met,
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
