"""Accelerator readiness: decode, and 64- and 256-seed sweeps, against the device's limits.

    python -m experiments.device_check [--model M] [--quick]  ->  results/device_check.json

Runs on whatever `jax.devices()[0]` is (a GPU or TPU when one is there; CPU for a smoke run).
Measures, on that device: the matrix-vector bandwidth (a jitted float32 GEMV over 512 MB),
the float32 matrix-multiply rate at the model's shapes for 1-256 rows (`roofline`), one-row
decode ms/token (off and seed) against the bandwidth limit (weight bytes / bandwidth), and
the wall time of 64- and 256-seed sweeps (preset seed, 128 greedy tokens) with their share of
the FLOP peak. Run it alone: it times things.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import attractor_jax as aj
from attractor_jax import bench, roofline
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic


def device_bandwidth_gbs(repeats: int = 10) -> float:
  """Bytes per second a jitted float32 matrix-vector product reads on the default device."""
  w = jax.random.normal(jax.random.key(0), (8192, 16384), jnp.float32)
  v = jnp.ones((16384,), jnp.float32)
  seconds = roofline.median_seconds(jax.jit(lambda w, v: w @ v), w, v, repeats=repeats)
  return w.size * 4 / seconds / 1e9


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--quick", action="store_true", help="4 and 8 seeds, 16 tokens: a smoke run")
  parser.add_argument("--out", default="results/device_check.json")
  args = parser.parse_args(argv)
  tokens, seed_counts = (16, (4, 8)) if args.quick else (128, (64, 256))
  model = aj.load(args.model)
  bandwidth = device_bandwidth_gbs()
  limit_ms = 1e3 * roofline.bytes_read_per_token(model.params) / (bandwidth * 1e9)
  gflops = {rows: roofline.matmul_gflops(model.params, rows) for rows in (1, 16, 64, 256)}
  peak, flops = max(gflops.values()), roofline.flops_per_token(model.params)
  decode = {}
  for preset in ("off", "seed"):
    bench.decode_ms_per_token(model, preset, tokens)  # compile
    decode[preset] = bench.decode_ms_per_token(model, preset, tokens)[0]
  wall = {}
  for seeds in (1, *seed_counts):
    aj.generate_seeds(model, bench.PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
    t = time.perf_counter()
    aj.generate_seeds(model, bench.PROMPT, tokens, memory=aj.presets["seed"], seeds=seeds)
    wall[seeds] = time.perf_counter() - t
  sweeps = {str(s): {"wall_s": w, "vs_1_seed": w / wall[1],
                     "flop_fraction": s * tokens * flops / w / 1e9 / peak}
            for s, w in wall.items()}
  device = jax.devices()[0]
  result = {"device": {"platform": device.platform, "kind": device.device_kind,
                       "count": jax.device_count()},
            "model": model.spec, "quick": args.quick, "tokens": tokens,
            "bandwidth_gbs": bandwidth, "bandwidth_limit_ms_per_token": limit_ms,
            "matmul_gflops_by_rows": {str(k): v for k, v in gflops.items()},
            "decode_ms_per_token": decode,
            "decode_vs_bandwidth_limit": {k: v / limit_ms for k, v in decode.items()},
            "sweeps": sweeps, "git_commit": git_commit(), "machine": machine_info(),
            "sources": sources()}
  write_json_atomic(args.out, result)
  print(f"{device.device_kind}: decode off {decode['off']:.2f} ms/token "
        f"({decode['off'] / limit_ms:.2f}x the bandwidth limit), sweeps "
        + ", ".join(f"{s} seeds {e['vs_1_seed']:.2f}x one" for s, e in sweeps.items())
        + f": wrote {args.out}")


if __name__ == "__main__":
  main()
