"""The --quick bench runs end to end and writes the documented JSON schema (no timing asserts)."""

import json
import math

from conftest import needs_smollm2

from attractor_jax import cli

RATIOS = {"decode_tokens_per_s_vs_transformers", "decode_ms_per_token_vs_bandwidth_limit",
          "decode_time_seed_vs_off", "decode_time_multiscale_vs_off",
          "sweep_wall_many_vs_one_seed", "scoring_tokens_per_s_vs_transformers"}


@needs_smollm2
def test_quick_bench_writes_the_schema(tmp_path, monkeypatch, smollm2):
  import attractor_jax as aj
  monkeypatch.setattr(aj, "load", lambda *a, **k: smollm2)
  out = tmp_path / "bench.json"
  assert cli.main(["bench", "--quick", "--out", str(out), "--json"]) == 0
  result = json.loads(out.read_text())
  assert set(result["ratios"]) == RATIOS == set(result["targets"]) == set(result["met"])
  for key in ("gemv_bandwidth_gbs", "bandwidth_limit_ms_per_token", "weight_bytes"):
    assert math.isfinite(result[key]) and result[key] > 0
  assert result["machine"]["cpus"] >= 1
  assert set(result["decode_ms_per_token"]) >= {"off", "seed", "multiscale"}
  assert (tmp_path / "bench.md").read_text().startswith("| measure |")
