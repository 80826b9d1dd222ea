"""Saving never loses data: writers refuse what the library did not write, a full disk or a
read-only place leaves the previous checkpoint whole and no temporaries, leftovers of killed
saves are removed, two writers leave one whole checkpoint, and non-finite state is named and
never saved."""

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import runs, writing
from attractor_jax.attractor import AttractorConfig
from attractor_jax.cli import main
from attractor_jax.errors import InputError
from attractor_jax.memories.fastweights import FastWeightsConfig
from experiments import report
from experiments.report.__main__ import main as report_main
from conftest import child_env, needs_smollm2
from tiny_models import random_model

MEMORY = AttractorConfig(layer=1)
PROMPT = "a prompt"


@pytest.fixture(scope="module")
def model():
  return random_model(tokenizer=True)


@pytest.fixture(scope="module")
def state(model):
  return aj.generate(model, PROMPT, 4, memory=MEMORY).state


def _save(path, state, model, **user):
  aj.save_state(path, state, memory=MEMORY, model=model, **user)


def _leftovers(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir() if ".attractor-" in p.name
                or "orbax-checkpoint-tmp" in p.name)


# ---- 1. refuse what we did not write ----

def test_save_state_refuses_a_file_or_directory_it_did_not_write(tmp_path, model, state):
  mine = tmp_path / "notes.txt"
  mine.write_text("my notes")
  folder = tmp_path / "folder"
  folder.mkdir()
  (folder / "thesis.tex").write_text("chapter 1")
  for path in (mine, folder):
    with pytest.raises(InputError, match=f"{path.name}.* attractor-jax did not write: choose "
                                         "another path for the checkpoint, or remove it yourself"):
      _save(path, state, model)
  assert mine.read_text() == "my notes" and (folder / "thesis.tex").read_text() == "chapter 1"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]
  empty = tmp_path / "empty"
  empty.mkdir()
  _save(empty, state, model)  # an empty directory holds nothing to lose
  _save(empty, state, model, again=True)  # our own checkpoint is replaced
  assert aj.restore_state(empty).user == {"again": True}


def test_result_and_report_writers_refuse_foreign_files(tmp_path, capsys):
  foreign = tmp_path / "data.json"
  foreign.write_text('{"mine": 1}')
  with pytest.raises(InputError, match="did not write"):
    writing.write_json_atomic(foreign, {"x": 1})
  assert foreign.read_text() == '{"mine": 1}'
  ours = writing.write_json_atomic(tmp_path / "result.json", {"x": 1})
  writing.write_json_atomic(ours, {"x": 2})  # ours: replaced
  assert '"written_by": "attractor-jax"' in ours.read_text() and '"x": 2' in ours.read_text()
  legacy = tmp_path / "legacy.json"  # a result of an earlier version (no marker)
  legacy.write_text('{"git_commit": "abc", "machine": {}, "x": 0}')
  writing.write_json_atomic(legacy, {"x": 3})
  notes = tmp_path / "RESULTS.md"
  notes.write_text("my own notes\n")
  (tmp_path / "results").mkdir()
  with pytest.raises(InputError, match="did not write"):
    report.write(tmp_path / "results", notes)
  assert report_main(["--results", str(tmp_path / "results"), "--out", str(notes)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "did not write" in err and "Traceback" not in err
  assert notes.read_text() == "my own notes\n"
  report.write(tmp_path / "results", tmp_path / "fresh.md")
  report.write(tmp_path / "results", tmp_path / "fresh.md")  # its own report: replaced
  assert (tmp_path / "fresh.md").read_text().startswith("# Results\n")


def test_resume_and_run_directories_refuse_foreign_files(tmp_path, model):
  foreign = tmp_path / "resume"
  foreign.mkdir()
  (foreign / "keep.csv").write_text("1,2")
  with pytest.raises(InputError, match="did not write"):
    aj.generate_seeds(model, PROMPT, 4, memory=MEMORY, seeds=2, resume_dir=foreign)
  with pytest.raises(InputError, match="did not write"):
    runs.generate_checkpointed(model, PROMPT, 4, run_dir=foreign, memory=MEMORY, every=2)
  assert sorted(p.name for p in foreign.iterdir()) == ["keep.csv"]
  fresh = tmp_path / "batches"
  first = aj.generate_seeds(model, PROMPT, 4, memory=MEMORY, seeds=2, resume_dir=fresh)
  again = aj.generate_seeds(model, PROMPT, 4, memory=MEMORY, seeds=2, resume_dir=fresh)
  assert first.tokens == again.tokens and len(list(fresh.iterdir())) == 1


@pytest.mark.parametrize("argv", [
    ["generate", "--prompt", "x", "--preset", "seed", "--save-state", "{file}"],
    ["generate", "--prompt", "x", "--preset", "seed", "--save-state", "{folder}"],
    ["sweep", "--task", "generate", "--prompt", "x", "--preset", "seed", "--out", "{file}"],
    ["sweep", "--task", "generate", "--prompt", "x", "--preset", "seed", "--resume-dir",
     "{folder}"],
    ["bench", "--quick", "--out", "{file}"],
])
def test_cli_writers_refuse_before_any_work(tmp_path, capsys, argv):
  """Exit 2, one line naming the path and the fix, no traceback, nothing touched (the refusal
  comes before the model loads)."""
  file, folder = tmp_path / "mine.json", tmp_path / "mine"
  file.write_text("user data")
  folder.mkdir()
  (folder / "paper.txt").write_text("user data")
  argv = [a.format(file=file, folder=folder) for a in argv]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert "did not write" in err and "remove it yourself" in err
  assert file.read_text() == "user data" and (folder / "paper.txt").read_text() == "user data"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "mine.json"]


# ---- 2. full disk, read-only place, vanished parent ----

@contextlib.contextmanager
def _tmpfs(where: pathlib.Path, size: str):
  where.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                        capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
  try:
    yield where
  finally:
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_keeps_the_previous_checkpoint_and_no_temporaries(tmp_path, model, state):
  with _tmpfs(tmp_path / "disk", "1m") as disk:
    _save(disk / "ck", state, model, n=1)
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - 8192, 0))  # about 8 KB stay free
    big = jax.tree.map(lambda a: jnp.repeat(a[None], 64, axis=0), state)  # ~40 KB of vectors
    with pytest.raises(InputError, match=r"cannot write .*ck.*No space left on device \(ENOSPC\)"):
      _save(disk / "ck", big, model, n=2)
    assert _leftovers(disk) == []
    restored = aj.restore_state(disk / "ck")
    assert restored.user == {"n": 1}
    np.testing.assert_array_equal(restored.state.vectors, state.vectors)
    (disk / "filler").unlink()
    _save(disk / "ck", big, model, n=3)  # space again: the save goes through
    assert aj.restore_state(disk / "ck").user == {"n": 3}


def test_read_only_place_keeps_the_previous_checkpoint(tmp_path, model, state):
  with _tmpfs(tmp_path / "disk", "1m") as disk:
    _save(disk / "ck", state, model, n=1)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
    if remount.returncode != 0:
      pytest.skip("cannot remount the tmpfs read-only")
    with pytest.raises(InputError, match=r"Read-only file system \(EROFS\)"):
      _save(disk / "ck", state, model, n=2)
    with pytest.raises(InputError, match="EROFS"):
      writing.write_json_atomic(disk / "result.json", {"x": 1})
    assert aj.restore_state(disk / "ck").user == {"n": 1}


def test_a_parent_that_is_not_a_directory_is_named(tmp_path, model, state):
  (tmp_path / "file").write_text("x")
  with pytest.raises(InputError, match=r"cannot write .*file/ck.*\(ENOTDIR\)"):
    _save(tmp_path / "file" / "ck", state, model)
  with pytest.raises(InputError, match=r"\(ENOTDIR\)"):
    writing.write_json_atomic(tmp_path / "file" / "r.json", {"x": 1})


def test_a_parent_that_vanishes_mid_write_is_named(tmp_path, model, state, monkeypatch):
  """A result file: ENOENT, named. A checkpoint: orbax makes the directories it writes to,
  so the save recreates the place and completes whole."""
  where = tmp_path / "gone"
  real = writing.remove_leftovers

  def vanish(path):  # runs after the writer made the parent directory
    real(path)
    path.parent.rmdir()

  monkeypatch.setattr(writing, "remove_leftovers", vanish)
  with pytest.raises(InputError, match=r"cannot write .*gone/r.json.*No such file or directory "
                                       r"\(ENOENT\)"):
    writing.write_json_atomic(where / "r.json", {"x": 1})
  assert not where.exists()
  _save(where / "ck", state, model, n=1)
  assert aj.restore_state(where / "ck").user == {"n": 1} and _leftovers(where) == []


@needs_smollm2
def test_cli_full_disk_exits_2_with_one_line(tmp_path, capsys, monkeypatch, smollm2):
  monkeypatch.setattr(aj, "load", lambda *a, **k: smollm2)  # the session's model, loaded once
  with _tmpfs(tmp_path / "disk", "64k") as disk:
    (disk / "filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize))
    code = main(["sweep", "--task", "generate", "--model", "smollm2-135m", "--prompt", "Hi",
                 "--preset", "seed", "--seeds", "1", "--max-new-tokens", "2",
                 "--out", str(disk / "sweep.json")])
    err = capsys.readouterr().err  # the progress bar shares stderr with the one error line
    errors = [line for line in err.splitlines() if line.startswith("attractor-jax: error")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "sweep.json" in errors[0] and "No space left on device" in errors[0]
    assert _leftovers(disk) == [] and sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_cli_full_disk_during_save_state_prints_only_the_readme_line(tmp_path):
  """The disk fills inside orbax's background writer threads: all of stderr is the one line."""
  with _tmpfs(tmp_path / "disk", "1m") as disk:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - 8192, 0))  # the state is ~20 KB
    done = subprocess.run([sys.executable, "-m", "attractor_jax.cli", "generate", "--prompt", "Hi",
                           "--preset", "seed", "--max-new-tokens", "1",
                           "--save-state", str(disk / "ck")],
                          env=child_env(), capture_output=True, text=True, timeout=300)
    line = (f"attractor-jax: error: cannot write {str(disk / 'ck')!r}: No space left on device "
            "(ENOSPC); nothing was replaced: free space or choose a writable place\n")
    assert (done.returncode, done.stderr) == (2, line)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


# ---- 3. leftovers of killed saves ----

def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_leftovers_of_dead_writers_are_removed_and_never_read(tmp_path, model, state):
  _save(tmp_path / "ck", state, model, n=1)
  dead, live = _dead_pid(), os.getpid()
  names = [f".ck.attractor-tmp-{dead}-00000000", f".ck.attractor-old-{dead}-11111111",
           f".ck.attractor-tmp-{dead}-22222222.orbax-checkpoint-tmp-1",
           f".ck.attractor-tmp-{live}-33333333", f".other.attractor-tmp-{dead}-44444444"]
  for name in names:
    (tmp_path / name / "meta").mkdir(parents=True)
    (tmp_path / name / "meta" / "metadata").write_text("garbage")
  assert aj.restore_state(tmp_path / "ck").user == {"n": 1}  # restore reads `ck` only
  _save(tmp_path / "ck", state, model, n=2)
  assert _leftovers(tmp_path) == sorted(names[3:])  # a live writer's and another path's stay
  assert aj.restore_state(tmp_path / "ck").user == {"n": 2}


_BATCHED_STATE = """
import jax, jax.numpy as jnp
import attractor_jax as aj
from conftest import needs_smollm2
from tiny_models import random_model
model = random_model(tokenizer=True)
memory = aj.AttractorConfig(layer=1)
state = aj.generate(model, "a prompt", 4, memory=memory).state
rows = lambda n: jax.tree.map(lambda a: jnp.repeat(a[None], n, axis=0), state)
"""

_KILLED_SAVE = _BATCHED_STATE + """
big = rows(4096)
print("ready", flush=True)
while True:
  aj.save_state("ck", big, memory=memory, model=model, n=2)
"""


def test_a_save_killed_mid_write_is_cleaned_by_the_next(tmp_path, model, state):
  _save(tmp_path / "ck", state, model, n=1)
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE], cwd=tmp_path, env=child_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(600):  # until a temporary of the writer is on disk
      if _leftovers(tmp_path):
        break
      subprocess.run(["sleep", "0.01"])
  finally:
    proc.kill()
    proc.wait()
  assert aj.restore_state(tmp_path / "ck").user["n"] in (1, 2)  # whole, the old or the new
  _save(tmp_path / "ck", state, model, n=3)
  assert _leftovers(tmp_path) == []
  assert aj.restore_state(tmp_path / "ck").user == {"n": 3}


# ---- 4. two writers, one path ----

_WRITER = _BATCHED_STATE + """
mine = rows(512)
mine = mine.replace(vectors=mine.vectors * 0 + {value})
print("ready", flush=True)
input()
for i in range(15):
  aj.save_state("ck", mine, memory=memory, model=model, writer={value}, i=i)
"""


def test_two_writers_leave_one_whole_checkpoint(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-c", _WRITER.format(value=v)], env=child_env(),
                            cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for v in (1, 2)]
  for p in procs:
    assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
  for p in procs:  # both start saving at once
    p.stdin.write("go\n")
    p.stdin.flush()
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  restored = aj.restore_state(tmp_path / "ck")
  writer = restored.user["writer"]
  assert writer in (1, 2) and restored.user["i"] == 14
  np.testing.assert_array_equal(np.asarray(restored.state.vectors), writer)  # not a mix
  assert _leftovers(tmp_path) == []


# ---- 5. non-finite state of any memory, and non-finite logits ----

def _poisoned(monkeypatch, at: int) -> FastWeightsConfig:
  """Fast weights whose update number `at` writes NaN into A."""
  real = FastWeightsConfig.observe

  def observe(self, state, obs, params):
    new, info = real(self, state, obs, params)
    return new.replace(A=jnp.where(new.step == at, jnp.nan, new.A)), info

  monkeypatch.setattr(FastWeightsConfig, "observe", observe)
  return FastWeightsConfig(layer=1, alpha=0.1 + at / 1e4)  # its own compilation


def test_non_finite_state_of_another_memory_is_named_and_never_saved(model, monkeypatch,
                                                                       tmp_path):
  memory = _poisoned(monkeypatch, at=6)
  with pytest.raises(InputError, match=r"seed 3: the pass that produced token 5 of this call "
                                       r"\(memory update 6\) gave NaN or Inf .*'fastweights'"):
    aj.generate(model, PROMPT, 10, memory=memory, seed=3)
  with pytest.raises(InputError, match=r"seed 0: .*token 5 .*'fastweights'"):
    aj.generate_seeds(model, PROMPT, 10, memory=memory, seeds=2, resume_dir=tmp_path / "b")
  assert not list((tmp_path / "b").iterdir())  # the failed batch was not stored
  with pytest.raises(InputError, match=r"seed 1: .*token 5 "):
    aj.generate_prompts(model, [PROMPT], 10, memory=memory, seeds=[1])
  fine = aj.generate(model, PROMPT, 5, memory=memory).state  # updates 1-5: finite
  bad = fine.replace(A=fine.A.at[0, 0].set(jnp.inf))
  with pytest.raises(InputError, match="NaN or Inf values in A: it is not saved"):
    aj.save_state(tmp_path / "ck", bad, memory=memory, model=model)
  assert not (tmp_path / "ck").exists()


def test_non_finite_logits_without_a_memory_are_named(model):
  params = jax.tree.map(lambda a: a, model.params)
  params["final_norm"]["scale"] = params["final_norm"]["scale"].at[0].set(jnp.nan)
  broken = dataclasses.replace(model, params=params)
  with pytest.raises(InputError, match=r"seed 0: the pass that produced token 0 of this call "
                                       r"gave NaN or Inf logits or memory state \(no memory\)"):
    aj.generate(broken, PROMPT, 4)
  with pytest.raises(InputError, match="seed 1: .*token 0 .*no memory"):
    aj.generate_seeds(broken, PROMPT, 4, memory=None, seeds=[1])


def test_a_kill_between_the_two_renames_is_undone_by_the_next_write(tmp_path, model, state):
  """Where the directory exchange is unsupported, the old checkpoint is moved aside before the
  new one moves in; a writer killed in between left only `.ck.attractor-old-PID-...`: the next
  write puts it back before anything else (and a failed save then keeps it)."""
  _save(tmp_path / "ck", state, model, n=1)
  aside = tmp_path / f".ck.attractor-old-{_dead_pid()}-00000000"
  os.replace(tmp_path / "ck", aside)
  writing.remove_leftovers(tmp_path / "ck")
  assert not aside.exists() and aj.restore_state(tmp_path / "ck").user == {"n": 1}


def test_resume_leaves_the_restored_run_usable(tmp_path, model):
  """Decoding consumes its input buffers; resume works on a copy, so a restored run resumes
  twice to the same tokens."""
  from attractor_jax import checkpoint, generation
  first = aj.generate(model, PROMPT, 6, memory=MEMORY, seed=2, temperature=0.8)
  checkpoint.save_run(tmp_path / "run", first, model)
  run = checkpoint.restore_run(tmp_path / "run", MEMORY, model).state
  kw = dict(memory=MEMORY, temperature=0.8)
  assert generation.resume(model, run, 5, **kw).tokens == generation.resume(model, run, 5, **kw).tokens
