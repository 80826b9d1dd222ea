"""Growth curves (issue 7): attractor overhead vs K and D, decode time vs context length,
sweep wall time vs seeds. Run alone on a quiet machine.

    python -m experiments.growth [--quick]  ->  results/growth.json, results/growth_*.png

- K: decode ms/token with preset seed at K attractors vs off, alternated, medians of repeats.
- D: the attractor update alone (jitted, one pass) in microseconds for widths D and K, since
  the model's width is fixed; compared with the model's own decode step.
- context: decode ms/token after a prompt of L tokens (KV cache of L + new tokens).
- seeds: wall time of one vmapped `generate_seeds` call for S seeds / for 1 seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import attractor
from attractor_jax.config import ModelConfig
from attractor_jax.data import pride_and_prejudice_from_truth
from attractor_jax.results import provenance
from attractor_jax.writing import write_json_atomic
from experiments.common import plot_lines

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def decode_ms(model, memory, prompt, tokens: int) -> float:
  g = aj.generate(model, prompt, tokens, memory=memory)
  return 1e3 * g.timing["decode_s"] / max(len(g.tokens) - 1, 1)


def update_us(width: int, k: int, repeats: int = 200) -> float:
  """Median microseconds of one jitted attractor update (preset seed with K attractors)."""
  cfg = dataclasses.replace(aj.presets["seed"], num_attractors=k, layer=0)
  mc = ModelConfig(family="llama", vocab_size=8, width=width, num_layers=1, num_heads=1,
                   num_kv_heads=1, head_dim=width, mlp_width=8, max_len=8, norm_eps=1e-6,
                   tie_embeddings=True)
  state = attractor.init_state(cfg, mc, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (width,))
  fn = jax.jit(lambda s, x: attractor.update(cfg, s, x)[0])
  jax.block_until_ready(fn(state, x))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state = jax.block_until_ready(fn(state, x))
    times.append(time.perf_counter() - t)
  return 1e6 * statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default="results/growth.json")
  args = parser.parse_args(argv)
  q = args.quick
  ks = (4, 16) if q else (4, 16, 64, 256)
  widths = (64, 576) if q else (64, 256, 576, 1024, 2048, 4096)
  contexts = (128, 256) if q else (128, 512, 1024, 2048, 4096)
  seed_counts = (1, 2) if q else (1, 4, 16, 64)
  tokens, repeats = (8, 1) if q else (64, 3)
  t0 = time.time()
  model = aj.load()
  bar = tqdm(total=4, desc="growth curves", file=sys.stderr)

  configs = {"off": aj.presets["off"]} | {
      f"K={k}": dataclasses.replace(aj.presets["seed"], num_attractors=k) for k in ks}
  for cfg in configs.values():  # compile
    decode_ms(model, cfg, PROMPT, tokens)
  k_times = {name: [] for name in configs}
  for _ in range(repeats):
    for name, cfg in configs.items():
      k_times[name].append(decode_ms(model, cfg, PROMPT, tokens))
  k_med = {name: statistics.median(v) for name, v in k_times.items()}
  k_rows = [{"K": k, "ms_per_token": k_med[f"K={k}"], "vs_off": k_med[f"K={k}"] / k_med["off"]}
            for k in ks]
  bar.update()

  d_rows = [{"D": d, "K": k, "update_us": update_us(d, k)} for d in widths for k in ks]
  bar.update()

  ids = np.asarray(model.tokenizer.encode(pride_and_prejudice_from_truth()[:40_000]), np.int32)
  c_rows = []
  for length in contexts:
    prompt = ids[:length].tolist()
    decode_ms(model, aj.presets["off"], prompt, tokens)  # compile
    c_rows.append({"context": length, "ms_per_token": statistics.median(
        decode_ms(model, aj.presets["off"], prompt, tokens) for _ in range(repeats))})
  bar.update()

  s_rows = []
  for s in seed_counts:
    aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=s)  # compile
    t = time.perf_counter()
    aj.generate_seeds(model, PROMPT, tokens, memory=aj.presets["seed"], seeds=s)
    s_rows.append({"seeds": s, "wall_s": time.perf_counter() - t})
  for r in s_rows:
    r["vs_one_seed"] = r["wall_s"] / s_rows[0]["wall_s"]
  bar.update()
  bar.close()

  stem = args.out.removesuffix(".json")
  plots = {name: f"{stem}_{name}.png" for name in ("K", "D", "context", "seeds")}
  plot_lines(plots["K"], {"seed preset / off": [r["vs_off"] for r in k_rows]}, x=list(ks),
             xlabel="K (attractors)", ylabel="decode time ratio", title="Attractor overhead vs K")
  plot_lines(plots["D"], {f"K={k}": [r["update_us"] for r in d_rows if r["K"] == k] for k in ks},
             x=list(widths), xlabel="D (width)", ylabel="us per update",
             title="Attractor update alone vs width")
  plot_lines(plots["context"], {"off": [r["ms_per_token"] for r in c_rows]}, x=list(contexts),
             xlabel="context (prompt tokens)", ylabel="ms per decoded token",
             title="Decode time vs context length")
  plot_lines(plots["seeds"], {"S seeds / 1 seed": [r["vs_one_seed"] for r in s_rows]},
             x=list(seed_counts), xlabel="seeds in one vmapped call", ylabel="wall time ratio",
             title="Seed sweep wall time vs seeds")
  write_json_atomic(args.out, {
      "experiment": "growth", "model": model.spec, "tokens": tokens, "repeats": repeats,
      "overhead_vs_K": k_rows, "off_ms_per_token": k_med["off"], "update_vs_D": d_rows,
      "decode_vs_context": c_rows, "sweep_vs_seeds": s_rows, "plots": list(plots.values()),
      **provenance(time.time() - t0),
      "quick": q})


if __name__ == "__main__":
  main()
