"""Gemma 3 270M against transformers on the same GGUF, in one run: perplexity, greedy tokens,
decode speed.

    python -m experiments.gemma3_figures [--quick]  ->  results/gemma3.json

Perplexity: the first 2,048 tokens of *Pride and Prejudice* in 512-token windows, each window
starting with BOS (not scored: Gemma's convention), both sides on the same windows. Greedy:
32 tokens after the bench prompt. Decode: ms/token of 64 greedy tokens, the two sides
alternated, medians of 3, against the bandwidth limit (the weight bytes one token reads at
the measured matrix-vector bandwidth). Run it alone: it times things.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import attractor_jax as aj
from attractor_jax import bench, roofline
from attractor_jax.data import pride_and_prejudice_from_truth
from attractor_jax.prompts import prompt_ids
from attractor_jax.results import provenance
from attractor_jax.scoring import text_windows, window_nll
from attractor_jax.writing import write_json_atomic

SPEC = "gemma3-270m"


def hf_window_nll(hf, windows_NxW: np.ndarray) -> np.ndarray:
  """transformers' summed next-token NLL of each window (float64)."""
  import torch

  out = []
  with torch.no_grad():
    for w in windows_NxW:
      logits = hf(torch.tensor(w[None], dtype=torch.long)).logits[0, :-1].double()
      logp = torch.log_softmax(logits, dim=-1)
      out.append(-float(logp.gather(1, torch.tensor(w[1:, None])).sum()))
  return np.asarray(out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer tokens: a smoke run")
  parser.add_argument("--out", default="results/gemma3.json")
  args = parser.parse_args(argv)
  max_tokens, new_tokens, repeats = (1024, 8, 1) if args.quick else (2048, 32, 3)
  t0 = time.time()
  model, hf = aj.load(SPEC), bench.load_hf(SPEC)
  windows = text_windows(model, pride_and_prejudice_from_truth(), 512, max_tokens)
  predictions = windows.shape[0] * (windows.shape[1] - 1)
  ours_ppl = float(np.exp(window_nll(model, windows).sum() / predictions))
  theirs_ppl = float(np.exp(hf_window_nll(hf, windows).sum() / predictions))

  import torch

  ids = prompt_ids(model, bench.PROMPT).tolist()
  ours_tokens = aj.generate(model, ids, new_tokens).tokens
  with torch.no_grad():
    theirs_tokens = hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=False)[0, len(ids):].tolist()

  bench.decode_ms_per_token(model, "off", 64)  # compile
  bench.hf_ms_per_token(hf, ids, 4)
  ms = {"ours": [], "transformers": []}
  for r in range(repeats):  # alternated, each side first in turn
    for side in (("ours", "transformers") if r % 2 == 0 else ("transformers", "ours")):
      ms[side].append(bench.decode_ms_per_token(model, "off", 64)[0] if side == "ours"
                      else bench.hf_ms_per_token(hf, ids, 64))
  weight_bytes = roofline.bytes_read_per_token(model.params)
  bandwidth = roofline.gemv_bandwidth_gbs()
  limit_ms = 1e3 * weight_bytes / (bandwidth * 1e9)
  median = {side: statistics.median(v) for side, v in ms.items()}
  write_json_atomic(args.out, {
      "experiment": "gemma3-figures", "model": SPEC, "quick": args.quick,
      "perplexity": {"data": f"Pride and Prejudice, first {windows.shape[0]} windows of 512 "
                             "tokens (BOS + 511 text tokens)",
                     "tokens": int(windows.size), "ours": ours_ppl, "transformers": theirs_ppl,
                     "relative_difference": ours_ppl / theirs_ppl - 1,
                     "within_0.1_percent": abs(ours_ppl / theirs_ppl - 1) <= 1e-3},
      "greedy": {"prompt": bench.PROMPT, "tokens": new_tokens, "ours": ours_tokens,
                 "transformers": theirs_tokens, "equal": ours_tokens == theirs_tokens},
      "decode_ms_per_token": {side: {"median": median[side], "runs": v} for side, v in ms.items()},
      "decode_speedup_vs_transformers": median["transformers"] / median["ours"],
      "weight_bytes_per_token": weight_bytes, "gemv_bandwidth_gbs": bandwidth,
      "bandwidth_limit_ms_per_token": limit_ms,
      "decode_vs_bandwidth_limit": median["ours"] / limit_ms,
      **provenance(time.time() - t0)})
  print(f"ppl ours {ours_ppl:.4f} vs transformers {theirs_ppl:.4f}; greedy equal "
        f"{ours_tokens == theirs_tokens}; decode {median['ours']:.1f} vs {median['transformers']:.1f}"
        f" ms/token, limit {limit_ms:.1f}")


if __name__ == "__main__":
  main()
