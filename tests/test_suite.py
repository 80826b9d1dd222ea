"""`attractor-jax eval` and `suite.evaluate`: attribution, resumption, scorecards, bad input."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import cli, forcing, stats, suite
from attractor_jax.errors import InputError
from attractor_jax.memories.controls import ControlConfig
from attractor_jax.seeds import stacked_keys
from attractor_jax.suite import clusters
from attractor_jax.suite import tasks as suite_tasks
from tiny_models import random_model

# 12 passages of 2 windows of 24 tokens: enough clusters for a tiny model's test
PASSAGES = dataclasses.replace(suite_tasks.Perplexity(), sizes={"quick": (4, 2, 24)})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Twin(ControlConfig):
  """A memory that is its own matched control: the moving average at a fixed size."""
  kind = "test-twin"
  direction: str = "average"
  feedback_ratio: float = 0.5


@pytest.fixture(scope="module")
def twin_card(tmp_path_factory):
  out = tmp_path_factory.mktemp("eval") / "twin"
  model = random_model(tokenizer=True)
  return model, out, suite.evaluate(model, Twin(), tasks=(PASSAGES,), quick=True, out=out,
                                    progress=False)


def test_a_memory_equal_to_its_matched_control_differs_by_exactly_zero(twin_card):
  _, _, card = twin_card
  task = card.tasks["perplexity"]
  assert task["realised_ratio"] == pytest.approx(0.5, rel=1e-6)
  for metric, test in task["comparisons"]["vs_matched"].items():
    assert test["mean_diff"] == 0.0 and test["p_value"] == 1.0, metric
  vs_off = task["comparisons"]["vs_off"]["nll"]
  assert abs(vs_off["mean_diff"]) > 0  # the push itself moved the model
  expected = ("the size of the push, not the memory" if stats.detectable(vs_off)
              else "no detectable change")
  assert expected in task["verdict"]


def test_rerun_resumes_every_arm_and_the_scorecard_loads_back(twin_card, monkeypatch):
  model, out, card = twin_card
  monkeypatch.setattr(type(PASSAGES), "score", lambda *a, **k: pytest.fail("an arm reran"))
  again = suite.evaluate(model, Twin(), tasks=(PASSAGES,), quick=True, out=out, progress=False)
  assert again.tasks == card.tasks
  loaded = suite.Scorecard.load(out / "scorecard.json")
  assert loaded.tasks == json.loads(card.to_json())["tasks"]
  assert "| perplexity |" in loaded.to_markdown()
  assert "`Twin`" in suite.comparison_table([card, loaded])
  manifest = json.loads((out / "manifest.json").read_text())
  assert {"scorecard.json", "scorecard.md", "scorecard.png"} <= set(manifest["written"])
  assert (out / "scorecard.png").read_bytes().startswith(b"\x89PNG")


def test_the_scorecard_says_what_the_memory_did(twin_card):
  _, _, card = twin_card
  assert "activity" not in card.to_markdown()  # the twin reports none
  tasks = {k: {**t, "memory_activity": {"gate_open": 0.25}} for k, t in card.tasks.items()}
  shown = dataclasses.replace(card, tasks=tasks).to_markdown()
  assert "The memory's activity (mean over passes): perplexity: gate_open 0.25." in shown


def test_another_design_in_the_same_out_is_refused(twin_card):
  model, out, _ = twin_card
  with pytest.raises(InputError, match="another design"):
    suite.evaluate(model, Twin(feedback_ratio=0.25), tasks=(PASSAGES,), quick=True, out=out,
                   progress=False)


def test_a_task_added_to_a_finished_eval_runs_alone(twin_card, monkeypatch):
  model, out, card = twin_card
  ran = []
  score = type(PASSAGES).score
  monkeypatch.setattr(type(PASSAGES), "score",
                      lambda self, *a: ran.append(self.name) or score(self, *a))
  later = dataclasses.replace(PASSAGES, name="later")
  both = suite.evaluate(model, Twin(), tasks=(PASSAGES, later), quick=True, out=out,
                        progress=False)
  assert set(ran) == {"later"} and len(ran) == 6  # its six arms, none of the finished task's
  assert both.tasks["perplexity"] == card.tasks["perplexity"]
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["design"]["tasks"] == ["perplexity", "later"]

def test_reuse_copies_only_the_arms_that_do_not_depend_on_the_memory(twin_card, tmp_path,
                                                                     monkeypatch):
  model, donor, card = twin_card
  ran = []
  score = type(PASSAGES).score
  monkeypatch.setattr(type(PASSAGES), "score",
                      lambda self, m, memory, *a: ran.append(memory) or score(self, m, memory, *a))
  other = suite.evaluate(model, Twin(feedback_ratio=0.25), tasks=(PASSAGES,), quick=True,
                         out=tmp_path / "other", reuse=donor, progress=False)
  assert [type(m).__name__ for m in ran] == ["Twin", "ControlConfig"]
  assert set(other.reused) == {"perplexity/calibration/off", "perplexity/evaluation/off",
                               "perplexity/evaluation/positive",
                               "perplexity/calibration/cache theta=8.0,lam=0.3"}
  for metric, test in card.tasks["perplexity"]["comparisons"]["positive_vs_off"].items():
    again = other.tasks["perplexity"]["comparisons"]["positive_vs_off"][metric]
    assert (again["mean_diff"], again["t_ci95"]) == (test["mean_diff"], test["t_ci95"])
  assert other.arm_seconds > 0 and "reused from" in other.to_markdown()
  with pytest.raises(InputError, match="no manifest.json"):
    suite.evaluate(model, Twin(), tasks=(PASSAGES,), quick=True, reuse=tmp_path / "nothing",
                   progress=False)

@pytest.mark.parametrize("task", [PASSAGES, suite_tasks.Comprehension(sizes={"quick": 6})],
                         ids=lambda t: t.name)
def test_a_control_imposes_the_realised_size_per_row(task):
  model = random_model(tokenizer=True)
  rows = task.rows(model, "evaluation", "quick")
  sizes = np.linspace(0.1, 1.2, task.clusters(rows))
  measured = task.score(model, ControlConfig(direction="random"), rows, sizes)
  np.testing.assert_allclose(measured.produced_ratio, sizes, rtol=1e-5)
  off = task.score(model, None, rows)
  assert not np.any(off.produced_ratio)
  assert any(np.any(measured.values[m] != off.values[m]) for m in off.values)


def test_one_window_perplexity_equals_a_forced_read_and_records_the_gate():
  """The dose study's ppl task: one window a cluster, its first predictions unscored."""
  model = random_model(tokenizer=True)
  task = suite_tasks.Perplexity(sizes={"quick": (4, 1, 24)}, unscored=5)
  rows = task.rows(model, "evaluation", "quick")
  memory = aj.presets["gated"]
  measured = task.score(model, memory, rows)
  keys, _ = stacked_keys(range(rows.shape[0]))
  forced = forcing.teacher_forced(model.engine(memory), model.params, jnp.asarray(rows[:, 0]),
                                  keys, prompt_len=suite_tasks.PROMPT_LEN)
  assert set(measured.values) == {"nll"}  # one window: no first and later windows
  np.testing.assert_allclose(measured.values["nll"], np.asarray(forced.nll)[:, 5:].mean(1),
                             atol=1e-5)
  gate = measured.activity["gate_open"]
  assert gate.shape == (task.clusters(rows),) and np.all((gate >= 0) & (gate <= 1))
  assert np.any(gate > 0)  # the gate opened: the arm tested the mechanism
  assert task.score(model, None, rows).activity == {}


@pytest.mark.parametrize("memory, message", [
    ("nonesuch", "is not a preset"),
    ("missing/file.py:Mem", "does not exist"),
    ("no_such_module_xyz:Mem", "cannot be imported"),
    ("json:JSONDecoder", "not a subclass of attractor_jax.Memory"),
    ("{broken}:Broken", "Broken() failed"),
    ("off", "is no memory"),
])
def test_bad_memory_exits_2_with_one_line(memory, message, capsys, tmp_path):
  broken = tmp_path / "broken.py"
  broken.write_text("import attractor_jax as aj\n\nclass Broken(aj.ControlConfig):\n"
                    "  def __post_init__(self):\n    raise ValueError('no')\n")
  memory = memory.format(broken=broken)
  out = tmp_path / "out"
  assert cli.main(["eval", "--memory", memory, "--quick", "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1, err
  assert not out.exists()


def test_unknown_model_and_a_foreign_out_exit_2_and_write_nothing(capsys, tmp_path):
  assert cli.main(["eval", "--memory", "seed", "--model", "nonesuch-9b", "--out",
                   str(tmp_path / "a")]) == 2
  assert "nonesuch-9b" in capsys.readouterr().err and not (tmp_path / "a").exists()
  foreign = tmp_path / "b"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  assert cli.main(["eval", "--memory", "seed", "--out", str(foreign)]) == 2
  err = capsys.readouterr().err
  assert "notes.txt" in err and err.count("\n") == 1
  assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_the_custom_memory_example_runs_through_eval_quick(capsys, tmp_path, monkeypatch):
  import attractor_jax as aj

  model = random_model(tokenizer=True)  # the tiny tokenizer cannot spell the recall items
  monkeypatch.setattr(aj, "load", lambda name: model)
  out = tmp_path / "custom"
  assert cli.main(["eval", "--memory", "examples/custom_memory.py:AverageConfig", "--quick",
                   "--tasks", "perplexity", "--json", "--out", str(out)]) == 0
  card = json.loads(capsys.readouterr().out)
  task = card["tasks"]["perplexity"]
  assert card["memory_config"]["kind"] == "leaky-average"
  assert task["realised_ratio"] > 0  # the memory fed something back: a test of it
  assert task["realised_ratio_by_arm"]["control:average"] == pytest.approx(
      task["realised_ratio"], rel=1e-3)
  assert task["verdict"] and card["provenance"]["sources"]
  assert suite.Scorecard.load(out / "scorecard.json").memory == card["memory"]


def test_unknown_tasks_exit_2(capsys):
  assert cli.main(["eval", "--memory", "seed", "--tasks", "recall,nonesuch"]) == 2
  assert "nonesuch" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class RepeatedPassages(suite_tasks.Perplexity):
  """Passages whose second window repeats the first: text the model can no longer see, which
  a working cache recalls."""

  def rows(self, model, split, size):
    rows = super().rows(model, split, size)
    return np.concatenate([rows[:, :1], rows[:, :1]], axis=1)


def test_the_positive_control_shows_a_detectable_gain_where_it_should():
  model = random_model(tokenizer=True)
  task = RepeatedPassages(sizes={"quick": (4, 2, 24)})
  card = suite.evaluate(model, Twin(), tasks=(task,), quick=True, progress=False)
  positive = card.tasks["perplexity"]["comparisons"]["positive_vs_off"]
  assert stats.detectable(positive["nll_later_windows"])
  assert positive["nll_later_windows"]["mean_diff"] < 0
  assert positive["nll_first_window"]["mean_diff"] > positive["nll_later_windows"]["mean_diff"]


def test_kv_metrics_sum_the_gold_span_and_compare_first_tokens():
  """Two items; item 0's 2-token answer starts at position 3, item 1's 1-token one at 4."""
  kv = clusters.KvRows(tokens=None, spans=np.asarray([(3, 2), (4, 1)]), candidates=None,
                       choices=np.asarray([[0, 1, 2], [3, 2, 1]]), answers=np.asarray([1, 0]))
  nll = np.full((2, 6), 9.0)
  nll[0, 2:4] = [0.5, 0.25]  # -log p of item 0's answer tokens
  nll[1, 3] = 2.0
  logp = np.full((2, 6, 4), -50.0)
  logp[0, 2] = [-1.0, -2.0, -3.0, -0.1]  # where item 0's answer starts: choice 0 beats gold 1
  logp[1, 3] = [-3.0, -2.0, -2.5, -1.0]  # item 1: gold (candidate 3) is best of 3, 2, 1
  got = clusters.kv_metrics(nll, logp, kv)
  np.testing.assert_allclose(got["gold_logprob"], [-0.75, -2.0])
  np.testing.assert_array_equal(got["accuracy"], [0.0, 1.0])


def test_sources_are_the_git_blob_hashes_of_the_imported_project_files():
  import pathlib
  import subprocess

  from attractor_jax.results import sources

  got = sources()
  root = pathlib.Path(stats.__file__).resolve().parent.parent
  assert "attractor_jax/stats.py" in got and not any(".venv" in p for p in got)
  expected = subprocess.run(["git", "hash-object", "attractor_jax/stats.py"], cwd=root,
                            capture_output=True, text=True)
  if expected.returncode == 0:  # a checkout with git
    assert got["attractor_jax/stats.py"] == expected.stdout.strip()


@pytest.mark.parametrize("vs_off, vs_matched, expected", [
    (0.0, 0.0, "no detectable change"),
    (1.0, 0.0, "gain: the size of the push, not the memory"),
    (1.0, 0.5, "gain beyond a push of its size: the memory's own"),
    (1.0, -0.5, "gain, less than a push of its size gives"),
    (-1.0, -0.5, "harm beyond a push of its size: the memory's own"),
    (-1.0, 0.5, "harm, less than a push of its size gives"),
])
def test_the_verdict_names_what_the_memory_adds_to_its_size(vs_off, vs_matched, expected):
  from attractor_jax.suite.evaluate import verdict

  test = lambda mean: {"mean_diff": mean, "p_holm": 1.0 if mean == 0 else 1e-6, "mde": 0.1}
  comparisons = {"vs_off": {"gold_logprob": test(vs_off)},
                 "vs_matched": {"gold_logprob": test(vs_matched)}}
  assert verdict(suite.TASKS["recall"], comparisons).startswith(expected)
