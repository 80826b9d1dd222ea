"""Nothing lost, same answer twice, long runs: killed writes, resumed sweeps, determinism across
processes, 10,000-token generations, and the guard against a NaN or Inf attractor state."""

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import attractor_jax as aj
from attractor_jax import attractor, checkpoint, cli, runs, seed_sweep
from attractor_jax.errors import InputError
from attractor_jax.presets import presets
from conftest import child_env
from tiny_models import random_model

SEED0 = dataclasses.replace(presets["seed"], layer=0)  # the tiny model here has 1 layer
PROMPT = [5, 17, 42, 3, 60, 9]


def _python(code: str, cwd) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=child_env(), cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, f"subprocess failed:\n{out}\n{err[-4000:]}"


@pytest.fixture(scope="module")
def tiny():
  return random_model(num_layers=1)


# ---- a killed writer never leaves half a result file ----

_WRITE_FOREVER = """
from attractor_jax.writing import write_json_atomic
rows = list(range(300_000))  # about 2 MB of JSON: most of the loop is inside a write
for i in range(1_000_000):
  write_json_atomic("result.json", {"i": i, "rows": rows, "complete": True})
  write_json_atomic("written", {"i": i})
"""


def _wait_until(condition, proc, seconds=60):
  deadline = time.monotonic() + seconds
  while not condition():
    assert proc.poll() is None, proc.stderr.read()[-4000:]
    assert time.monotonic() < deadline, f"the writer did not get there in {seconds} s"
    time.sleep(0.001)


def _kill_writer(d, when) -> bool:
  """Starts the writer in `d`, kills it once `when(d)` holds after its first whole write, and
  checks result.json is a whole, valid write. True when a temporary file shows the kill landed
  mid-write."""
  d.mkdir()
  proc = _python(_WRITE_FOREVER, d)
  try:
    _wait_until(lambda: (d / "written").exists(), proc)
    when(d, proc)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  result = json.loads((d / "result.json").read_text())
  assert result["complete"] and result["rows"] == list(range(300_000))
  assert result["i"] >= json.loads((d / "written").read_text())["i"]
  return any(p.name.startswith(".result.json.") for p in d.iterdir())


def test_sigkill_while_writing_json_leaves_no_half_file(tmp_path):
  """Kills at fixed delays, then kills aimed at a write in progress (a temporary file seen):
  result.json is always a whole, valid write, and at least one kill is shown to have landed
  mid-write (the aimed kills retry, since a write can finish between the look and the kill)."""
  for k, delay in enumerate((0.0, 0.13, 0.41)):
    _kill_writer(tmp_path / f"delay{k}", lambda d, proc: time.sleep(delay))

  def mid_write(d, proc):
    _wait_until(lambda: any(p.name.startswith(".result.json.") for p in d.iterdir()), proc)

  assert any(_kill_writer(tmp_path / f"aimed{k}", mid_write) for k in range(10))


# ---- a sweep in seed batches, resumed from the batches already written ----

def _spy_calls(monkeypatch) -> list:
  """Records the rows of each vmapped call that runs: (seeds, padded width)."""
  calls, inner = [], seed_sweep._run_rows

  def spy(model, engine, ids_RxT, seeds, *args):
    calls.append((len(seeds), args[-1]))
    return inner(model, engine, ids_RxT, seeds, *args)

  monkeypatch.setattr(seed_sweep, "_run_rows", spy)
  return calls


def _assert_same_runs(a, b, exact=True):
  assert type(a) is type(b) is aj.SeedRuns
  assert a.tokens == b.tokens and a.seeds == b.seeds and a.prompt_tokens == b.prompt_tokens
  assert a.memory == b.memory
  close = (np.testing.assert_array_equal if exact else
           lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5, rtol=0))
  for key in ("states", "trace"):
    x_leaves, x_def = jax.tree_util.tree_flatten_with_path(getattr(a, key))
    y_leaves, y_def = jax.tree_util.tree_flatten_with_path(getattr(b, key))
    assert x_def == y_def and x_leaves, key  # same fields (None where None), some arrays
    for (path, x), (_, y) in zip(x_leaves, y_leaves):
      assert x.shape == y.shape, jax.tree_util.keystr(path)
      close(np.asarray(x), np.asarray(y))


def test_batched_seeds_equal_one_call_and_resume_reuses_finished_batches(tiny, tmp_path,
                                                                         monkeypatch):
  kw = dict(memory=SEED0, seeds=[4, 0, 9, 2, 7], temperature=0.8)
  whole = aj.generate_seeds(tiny, PROMPT, 12, **kw)
  calls = _spy_calls(monkeypatch)
  batched = aj.generate_seeds(tiny, PROMPT, 12, batch_size=2, resume_dir=tmp_path, **kw)
  assert calls == [(2, 2), (2, 2), (1, 2)]  # the last batch (one seed) is padded to one shape
  _assert_same_runs(batched, whole, exact=False)
  assert len({tuple(t) for t in batched.tokens}) == 5
  files = sorted(tmp_path.glob("seeds-*.npz"))
  assert [f.name.split("-")[1] for f in files] == ["4", "7", "9"]

  calls.clear()  # a finished sweep, run again: nothing is generated
  _assert_same_runs(aj.generate_seeds(tiny, PROMPT, 12, batch_size=2, resume_dir=tmp_path, **kw),
                    batched)
  assert calls == []

  # killed after its first two batches: only the last one is generated again
  seven = next(tmp_path.glob("seeds-7-*.npz"))
  seven.unlink()
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  leftover = tmp_path / f".{seven.name}.attractor-tmp-{dead.pid}-0000abcd"  # a kill's leftover
  leftover.write_bytes(b"PK\x03\x04 cut off")
  _assert_same_runs(aj.generate_seeds(tiny, PROMPT, 12, batch_size=2, resume_dir=tmp_path, **kw),
                    batched)
  assert calls == [(1, 2)] and not leftover.exists()  # the next write removed it

  calls.clear()  # other settings never reuse these batches
  aj.generate_seeds(tiny, PROMPT, 12, batch_size=2, resume_dir=tmp_path,
                    **{**kw, "temperature": 0.7})
  assert calls == [(2, 2), (2, 2), (1, 2)]


def test_cli_sweep_resumes_from_its_batches(tiny, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(aj, "load", lambda spec="smollm2-135m", dtype=None: random_model(
      tokenizer=True, num_layers=1))
  monkeypatch.setitem(presets, "seed", SEED0)
  argv = ["sweep", "--task", "generate", "--prompt", "Once u", "--preset", "seed",
          "--seeds", "3", "--batch-size", "2", "--max-new-tokens", "12", "--temperature", "0.8",
          "--resume-dir", str(tmp_path / "batches"), "--out", str(tmp_path / "out.json"), "--json"]
  assert cli.main(argv) == 0
  first = json.loads(capsys.readouterr().out)
  assert len(list((tmp_path / "batches").glob("seeds-*.npz"))) == 4  # 2 batches x (off, seed)
  calls = _spy_calls(monkeypatch)
  assert cli.main(argv) == 0
  again = json.loads(capsys.readouterr().out)
  assert calls == []
  assert again["per_seed"] == first["per_seed"] and again["per_seed_off"] == first["per_seed_off"]
  assert json.loads((tmp_path / "out.json").read_text())["texts"] == first["texts"]


# ---- the same seeded run in two processes ----

_SEEDED_RUN = """
import dataclasses, numpy as np
from attractor_jax.generation import generate
from attractor_jax.presets import presets
from tiny_models import random_model
cfg = dataclasses.replace(presets["seed"], layer=1)
g = generate(random_model(), [5, 17, 42, 3, 60, 9], 64, memory=cfg, seed=3, temperature=0.8)
np.savez("run.npz", generated=np.asarray(g.tokens),
         **{f.name: np.asarray(getattr(g.state, f.name)) for f in dataclasses.fields(g.state)})
"""


def test_same_seed_same_tokens_and_state_in_two_processes(tmp_path):
  dirs = [tmp_path / "a", tmp_path / "b"]
  for d in dirs:
    d.mkdir()
  for proc in [_python(_SEEDED_RUN, d) for d in dirs]:
    _wait(proc)
  a, b = (np.load(d / "run.npz") for d in dirs)
  assert set(a.files) == set(b.files) and len(set(a["generated"].tolist())) > 5
  for name in a.files:
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---- long runs: 10,000 tokens stay finite; a NaN state is caught and never checkpointed ----

@pytest.mark.parametrize("name", ["seed", "gated", "multiscale"])
def test_ten_thousand_tokens_stay_finite(name):
  """10,000 sampled tokens on a 1-layer model (the guard in `generate` would raise otherwise)."""
  model = random_model(num_layers=1, max_len=10_240)
  cfg = dataclasses.replace(presets[name], layer=0)
  g = aj.generate(model, PROMPT, 10_000, memory=cfg, seed=1, temperature=0.8, trace=True)
  assert len(g.tokens) == 10_000 and int(g.state.step) == 10_000
  assert g.trace.finite.shape == (10_000,) and g.trace.finite.all()
  s = np.asarray(g.trace.info.strength)
  assert s.shape == (10_000, cfg.num_banks, cfg.num_attractors)
  assert 0.0 <= s.min() and s.max() <= 1.0 and s[-1].max() > 0.5  # it stayed in use
  for leaf in (g.state.vectors, g.state.feedback, g.state.mean):
    assert np.isfinite(np.asarray(leaf)).all()


def _poison(monkeypatch, at: int):
  """Makes attractor update number `at` write NaN into the vectors (and so every later pass).

  Returns a config no other test compiles, so the poisoned update has its own jit cache entries.
  """
  real = attractor.update

  def update(cfg, state, x_D, residual=None, tokens=1):
    new, info = real(cfg, state, x_D, residual, tokens)
    return new.replace(vectors=jnp.where(new.step == at, jnp.nan, new.vectors)), info

  monkeypatch.setattr(attractor, "update", update)
  return dataclasses.replace(SEED0, alpha=0.01 + at / 1e5)


def test_a_non_finite_state_is_named_and_never_checkpointed(tiny, tmp_path, monkeypatch):
  """Update 25 goes NaN: the chunked run stops there keeping its checkpoint at 20 tokens, and
  continuing that checkpoint's state with `generate` names the same update."""
  cfg = _poison(monkeypatch, at=25)
  with pytest.raises(InputError, match=r"token 4 of this call \(memory update 25\).*after 20 "):
    runs.generate_checkpointed(tiny, PROMPT, 40, run_dir=tmp_path, memory=cfg, every=10)
  done, run = runs.latest_good(tmp_path, cfg, tiny)
  assert done == 20 and sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [
      10, 20]
  state = jax.tree.map(lambda a: np.asarray(a)[0], run["rows"].memory_state)  # row 0
  assert int(state.step) == 20
  assert all(np.isfinite(leaf).all() for leaf in (state.vectors, state.strength, state.feedback))
  with pytest.raises(InputError, match=r"token 4 of this call \(memory update 25\)"):
    aj.generate(tiny, PROMPT, 10, memory=cfg, state=state)


def test_a_run_folder_of_an_older_format_names_the_last_commit_that_reads_it(tiny, tmp_path):
  """Run checkpoints of formats 2-4 are no longer read: resuming one says so in one line."""
  tree, meta = checkpoint.run_tree(aj.generate(tiny, PROMPT, 10, memory=SEED0), tiny)
  old = runs._manager(tmp_path, 3)
  old.save(10, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(
      {**meta, "format": "attractor-jax/4"})))
  old.wait_until_finished()
  with pytest.raises(InputError, match=r"'attractor-jax/4', which this version no longer reads: "
                                       r"restore it with attractor-jax at commit 75be428"):
    runs.generate_checkpointed(tiny, PROMPT, 20, run_dir=tmp_path, memory=SEED0, every=10)
