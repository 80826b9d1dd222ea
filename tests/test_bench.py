"""The bench's JSON schema (checked on the quick suite's bench: tests/test_suite_quick.py) and
its statistics; no timing asserts."""

import math

import pytest

from conftest import needs_torch


RATIOS = {"decode_tokens_per_s_vs_transformers",
          "decode_tokens_per_s_vs_transformers_separate_process",
          "decode_ms_per_token_vs_bandwidth_limit",
          "decode_time_seed_vs_off_ci95_upper", "decode_time_multiscale_vs_off_ci95_upper",
          "sweep_16_vs_transformers", "sweep_64_vs_transformers",
          "sweep_16_vs_transformers_separate_process", "sweep_64_vs_transformers_separate_process",
          "sweep_wall_16_vs_1_seed", "sweep_wall_64_vs_1_seed", "sweep_16_rows_compute_fraction",
          "sweep_64_rows_compute_fraction", "scoring_compute_fraction",
          "scoring_tokens_per_s_vs_transformers"}


def check_bench_schema(result: dict, where):
  """What `attractor-jax bench --quick` writes (`result`, from `where`/bench.json): every
  target's ratio, the roofline, and the paired overheads inside their extremes."""
  assert set(result["ratios"]) == RATIOS == set(result["targets"]) == set(result["met"])
  roof = result["roofline"]
  for key in ("gemv_bandwidth_gbs", "bandwidth_limit_ms_per_token", "weight_bytes",
              "peak_gflops", "flops_per_token"):
    assert math.isfinite(roof[key]) and roof[key] > 0
  assert set(roof["matmul_gflops_by_rows"]) == {"1", "16", "64", "256"}
  assert roof["peak_gflops"] == max(roof["matmul_gflops_by_rows"].values())
  ms = result["decode_ms_per_token"]
  for side in ("seed", "multiscale"):  # the paired ratio lies within the ratios' extremes
    o = result["overhead_vs_off"][side]
    assert o["repeats"] == 2 == ms[side]["n"] == ms["off"]["n"]
    lowest, highest = ms[side]["min"] / ms["off"]["max"], ms[side]["max"] / ms["off"]["min"]
    assert lowest <= o["ratio"] <= highest
  assert result["machine"]["cpus"] >= 1
  assert set(result["decode_ms_per_token"]) >= {"off", "seed", "multiscale"}
  assert (where / "bench.md").read_text().startswith("| measure |")


def test_paired_ratio_is_the_geometric_mean_with_a_t_interval():
  import numpy as np
  import scipy.stats

  from attractor_jax.bench import paired_ratio
  side, base = [1.02, 1.00, 1.04, 1.01], [1.0, 1.0, 1.0, 1.0]
  out = paired_ratio(side, base)
  logs = np.log(side)
  assert out["ratio"] == pytest.approx(np.exp(logs.mean()))
  half = scipy.stats.t.ppf(0.975, 3) * logs.std(ddof=1) / 2
  assert out["ci95"] == pytest.approx([np.exp(logs.mean() - half), np.exp(logs.mean() + half)])


def test_flops_per_token_counts_every_matrix_once():
  from attractor_jax import roofline
  from tiny_models import random_model
  model = random_model(tie_embeddings=False)
  c = model.config
  per_layer = c.width * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim \
      + c.num_heads * c.head_dim * c.width + 3 * c.width * c.mlp_width
  assert roofline.flops_per_token(model.params) == 2 * (c.num_layers * per_layer
                                                         + c.width * c.vocab_size)


@needs_torch
def test_the_peer_samples_every_row_to_the_token_count_in_a_separate_process(tmp_path):
  """`bench_peer` (transformers' batched sampling, EOS unable to stop it) on a tiny random
  llama, run as the bench runs it: a separate process printing one JSON object."""
  import json
  import subprocess
  import sys

  from tiny_models import llama_dir
  llama_dir(tmp_path)
  out = subprocess.run([sys.executable, "-m", "attractor_jax.bench_peer", "--model",
                        str(tmp_path), "--ids", "1,5,9", "--rows", "1,3", "--tokens", "6",
                        "--repeats", "1"], check=True, capture_output=True, text=True)
  result = json.loads(out.stdout)
  assert set(result["sample_s"]) == {"1", "3"} and all(s > 0 for s in result["sample_s"].values())
  assert math.isfinite(result["decode_ms_per_token"])
