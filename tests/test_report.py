"""RESULTS.md's related-work table and answer are built from result files, not typed."""

import json

from experiments import report


def _paired(diff, lo, hi):
  return {"mean_diff": diff, "ci95": [lo, hi], "p_value": 0.5}


def _write(tmp_path, name, obj):
  (tmp_path / f"{name}.json").write_text(json.dumps(obj))


def test_memory_table_pairs_every_metric_and_names_strict_wins(tmp_path):
  e1 = {"ppl": 21.0, "baseline_ppl": 21.02, "seeds": 8, "tokens": 2048, "window": 512,
        "windows": 4, "model": "m", "git_commit": "abc1234",
        "window_nll_baseline": [1000.0, 1010.0, 990.0, 1005.0]}
  _write(tmp_path, "e1_ppl_seed", {**e1, "delta_pct": -0.1, "delta_pct_ci95": [-0.3, 0.0],
                                   "p_value": 0.3, "window_nll": [999.0, 1011.0, 988.0, 1004.0]})
  _write(tmp_path, "e1_ppl_cache", {**e1, "delta_pct": -5.0, "delta_pct_ci95": [-6.0, -4.0],
                                    "p_value": 0.001, "window_nll": [950.0, 955.0, 945.0, 960.0]})
  gen = {"n_items": 32, "data": ["a", "b", "c", "d"], "seeds": 8, "max_new_tokens": 200,
         "paired_vs_off": {"seed": {"seq_rep_4": _paired(0.1, 0.05, 0.2)},
                           "cache": {"seq_rep_4": _paired(0.3, 0.25, 0.4)}}}
  _write(tmp_path, "e7_generation", gen)
  text = report.build(tmp_path)
  cache_row = next(line for line in text.splitlines() if line.startswith("| cache |"))
  assert "**-5.000 [-6.000, -4.000]**" in cache_row  # CI excludes 0, Holm p 0.002: bold
  assert "| +0.300 [+0.250, +0.400] |" in cache_row  # CI excludes 0, Holm p 1.0: not bold
  hopfield_row = next(line for line in text.splitlines() if line.startswith("| hopfield |"))
  assert hopfield_row.count("n/a") == 7  # no results: every cell says so
  answer = next(line for line in text.splitlines() if line.startswith("| E7 |"))
  assert "cache is better than every attractor row on ppl change %" in answer
  assert "seed is better than cache on seq-rep-4" in answer  # more repetition is worse
  # paired per window on the same tokens: seed's NLL is above the cache's in every window
  assert "(one commit, abc1234)" in text
  assert ("Paired with the cache on the same windows, the attractor layer's NLL is higher "
          "(strictly worse) for seed (seed +0.0939 nats/token") in text


def test_full_suite_wall_time_is_reported_with_each_part(tmp_path):
  _write(tmp_path, "run_all", {"quick": False, "wall_s": 5400.0, "git_commit": "abcdef123",
                               "experiment_wall_s": {"e4_comprehension": 720.0, "bench": 90.0},
                               "experiments_at_once": 2,
                               "machine": {"cpus": 2, "platform": "Linux-x86_64"}})
  text = report.build(tmp_path)
  assert ("ran end to end in 90 minutes on 2 CPUs, Linux-x86_64 (git abcdef1; minutes per part, "
          "2 experiments at a time, then the bench alone: e4_comprehension 12.0, bench 1.5).") in text
  _write(tmp_path, "run_all", {"quick": True, "wall_s": 300.0})
  assert "end to end" not in report.build(tmp_path)  # a smoke run is not the suite


def test_a_preset_whose_gate_never_opened_is_reported_as_not_tested(tmp_path):
  """E4's table shows each preset's gate openness; a preset at 0% gets no verdict, only the
  statement that it was not tested, while an opened one keeps its CI."""
  both = {"accuracy": _paired(0.0, 0.0, 0.0), "gold_logprob": _paired(0.0, -1e-6, 1e-6)}
  summary = {p: {"accuracy": {"mean": 0.3}} for p in ("off", "seed", "gated")}
  seed = _paired(0.01, 0.002, 0.02) | {"p_holm": 0.04, "mde": 0.021}
  _write(tmp_path, "e4_comprehension", {
      "model": "smollm2-135m", "data": "stories", "chance": 0.25, "n_items": 200,
      "n_stories": 157, "seeds": 8, "segment": 16, "git_commit": "abc1234", "summary": summary,
      "gate_open": {"off": None, "seed": 1.0, "gated": 0.0},
      "paired_vs_off": {"seed": {**both, "accuracy": seed}, "gated": both}})
  text = report.build(tmp_path)
  claims = next(line for line in text.splitlines() if line.startswith("| E4 |"))
  assert "gated: not a test: its gate never opened (0% of context passes)" in claims
  assert "seed: +1.00 points [+0.20, +2.00] (higher than off" in claims
  assert ", MDE 2.10 points)" in claims  # the minimum detectable effect beside the CI
  assert "| seed | 30.0% | +1.00 | [+0.20, +2.00] | " in text and " | 0.040 | 2.10 | " in text
  assert "; gate open on 100% of context passes" in claims  # an open gate is named too
  rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
  assert rows["| gated"].endswith("| 0% |") and rows["| seed"].endswith("| 100% |")
  (tmp_path / "e4_comprehension.json").write_text(
      (tmp_path / "e4_comprehension.json").read_text().replace('"gated": 0.0', '"gated": 0.00016'))
  claims = next(line for line in report.build(tmp_path).splitlines() if line.startswith("| E4 |"))
  assert "its gate opened on only 0.016% of context passes" in claims  # rarely open: said so
  gemma = json.loads((tmp_path / "e4_comprehension.json").read_text()) | {"model": "gemma3-270m"}
  _write(tmp_path, "e4_comprehension_gemma3-270m", gemma)  # a second model: its own table
  text = report.build(tmp_path)
  claims = next(line for line in text.splitlines() if line.startswith("| E4 |"))
  assert "smollm2-135m: off accuracy 30.0%" in claims and "gemma3-270m: off accuracy" in claims
  assert "`python -m experiments.e4_comprehension --model gemma3-270m`" in text


def test_first_round_files_without_a_gate_record_are_named(tmp_path):
  """Under the claims table, once the study exists, first-round files whose gated rows carry no
  gate record are named (their rows are no evidence the gate acted); recorded ones are not."""
  res = {"dose_ppl_m": {"model": "m", "clusters": 36, "first_detectable_harm": {}},
         "dose_kv_n": {"model": "n", "clusters": 384, "first_detectable_harm": {}},
         "e6_topics": {"paired_vs_off": {}}, "suite_recall": {"cloze": {"gate_open": {}}}}
  line = report.first_round_note(res)[0]
  assert "(2 result files on 2 models, 36 to 384 clusters per comparison" in line
  assert "stands beside them (E1's windows and E7's prompts" in line  # neither is thin here
  thin = {**res, "e1_ppl_seed": {"tokens": 2048, "window": 512}}
  assert "supersedes E1 (4 windows); its answers" in report.first_round_note(thin)[0]
  assert "not recorded in `e6_topics`: their gated rows" in line and "suite_recall" not in line
  assert report.first_round_note({"e6_topics": {}}) == []  # no study yet: no note


def test_generation_rows_say_when_a_gate_never_or_rarely_opened():
  from experiments.report.experiments import _gate_note
  r = {"gate_open": {"off": None, "gated": 0.0, "rare": 0.05, "seed": 1.0}}
  assert _gate_note(r, "gated") == "; its gate never opened (0% of passes): not a test"
  assert _gate_note(r, "rare") == "; gate open on only 5% of passes"
  assert _gate_note(r, "seed") == "; gate open on 100% of passes"
  assert _gate_note(r, "off") == "" and _gate_note({}, "seed") == ""


def test_e1_rows_carry_the_gate_share_the_sweep_recorded(tmp_path):
  """E1's claims row and table say how often each preset's gate was open; a file written
  before the record says 'not recorded' in the table and nothing in the claims row."""
  e1 = {"ppl": 21.0, "baseline_ppl": 21.02, "seeds": 8, "tokens": 2048, "window": 512,
        "model": "m", "delta_pct": -0.1, "delta_pct_ci95": [-0.3, 0.0], "p_value": 0.3}
  _write(tmp_path, "e1_ppl_gated", {**e1, "gate_open": 0.931})
  _write(tmp_path, "e1_ppl_seed", e1)
  text = report.build(tmp_path)
  claims = next(line for line in text.splitlines() if line.startswith("| E1 |"))
  assert "gated: -0.10% [-0.30, +0.00] (8 seeds, 2048 tokens); gate open on 93.1% of passes" in claims
  assert claims.endswith("<br>seed: -0.10% [-0.30, +0.00] (8 seeds, 2048 tokens) |")
  rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
  assert rows["| gated"].endswith("| 93.1% |") and rows["| seed"].endswith("| not recorded |")


def test_answer_iv_reads_e4_against_the_seeds_gain():
  from experiments.report.study import _comprehension
  test = lambda mde, p: {"mean_diff": 0.0, "ci95": [0, 0], "p_value": p, "p_holm": p, "mde": mde}
  res = {"e4_comprehension": {
      "model": "m", "n_stories": 240, "summary": {"off": {"accuracy": {"mean": 0.758}}},
      "paired_vs_off": {"seed": {"accuracy": test(0.020, 0.9), "gold_logprob": test(0.01, 0.001)},
                        "gated": {"accuracy": test(0.026, 0.01), "gold_logprob": test(0.01, 0.2)}}}}
  text = _comprehension(res)
  assert "m: off 75.8% over 240 stories, accuracy MDE 2.0 to 2.6 points (at most the seed's +3.3)" in text
  assert "accuracy moved (Holm) in gated, the right answer's log-likelihood in seed" in text
  assert _comprehension({}) == ""


def test_e5_sweep_rows_and_conclusion_come_from_the_windowed_comparison(tmp_path):
  def row(axis, value, diff, finite, p_holm=0.004):
    test = {"clusters": 36, "mean_diff": diff, "sd": 0.01, "t_ci95": [diff - 0.001, diff + 0.001],
            "bca_ci95": [diff - 0.001, diff + 0.001], "p_value": 0.001, "mde": 0.0005,
            "p_holm": p_holm}
    return {"axis": axis, "value": value, "vs_off": test, "finite_share": finite,
            "seed_std": 0.0002, "activity": {"feedback_ratio_mean": 0.01, "winner_share": 0.9}}
  _write(tmp_path, "e5_sweeps", {
      "clusters": 36, "seeds": 2, "data": "36 windows", "baseline_nll": 3.0,
      "git_commit": "abc1234", "plots": [],
      "rows": [row("K", 1, 0.002, 1.0), row("K", 256, -0.003, 0.5), row("lambda", 0.0, 0.001, 1.0),
               row("lambda", 1.0, 0.004, 1.0, p_holm=0.2)]})
  text = report.build(tmp_path)
  assert "| K | 256 | -0.00300 | [-0.00400, -0.00200] | 0.00050 | 0.004 | 0.00020 | 50% |" in text
  assert ("More attractors (K 1 to 256, 36 windows): NLL change vs off +0.0020 to -0.0030 "
          "nats/token (at K=256 lower, Holm p 0.004); realised |feedback| / residual 0.0100 to "
          "0.0100; as few as 50% of rows finite.") in text
  assert ("(lambda 0.0 to 1.0, 36 windows): NLL change vs off +0.0010 to +0.0040 nats/token (at "
          "lambda=1.0 no detectable change after Holm, Holm p 0.2)") in text  # CI excludes 0
  assert "every row finite." in text


def test_compute_section_sums_recorded_time_against_the_budget(tmp_path):
  _write(tmp_path, "e6_other", {"wall_s": 3600.0, "git_commit": "abc1234"})
  _write(tmp_path, "dose_ppl_m", {"git_commit": "def5678", "arms": {
      "off": {"seconds": 1800.0}, "seed/open/0.1": {"seconds": 12600.0}}})
  _write(tmp_path, "e7_untimed", {"git_commit": "abc1234"})
  _write(tmp_path, "e5_quick", {"wall_s": 99999.0, "quick": True})
  _write(tmp_path, "bench_other", {"wall_s": 99999.0})  # not a study file
  text = report.build(tmp_path)
  assert "Recorded by the result files: **5.0 hours** (budget 4 hours; over it)." in text
  assert "| dose_ppl_m | 240.0 | def5678 |\n| e6_other | 60.0 | abc1234 |" in text
  assert "No time recorded: `e7_untimed`." in text
