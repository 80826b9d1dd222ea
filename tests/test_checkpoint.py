"""Orbax checkpoints of attractor states and runs: round trips, refusals, damage, resume, kill,
the caller's own metadata, and a clear refusal of formats this version no longer reads."""

import dataclasses
import functools
import json
import pathlib
import shutil
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

import attractor_jax
import attractor_jax as aj
from attractor_jax import attractor, checkpoint, generation
from attractor_jax.attractor import AttractorConfig, AttractorState
from attractor_jax.errors import InputError
from attractor_jax.model import Model
from attractor_jax.presets import presets
import tiny_models
from conftest import child_env

TESTS = pathlib.Path(__file__).parent
FORMAT3 = TESTS / "data" / "checkpoints_format3"
CFG = dataclasses.replace(presets["seed"], layer=1)  # the tiny model has 2 layers
PROMPT = [5, 17, 33, 2, 60, 8, 41]
# A 2-layer llama-style model, 4 heads sharing 2 KV heads, untied output (no tokenizer: eos -1).
TINY = dict(vocab_size=97, width=32, num_heads=4, num_kv_heads=2, mlp_width=48, max_len=128,
            tie_embeddings=False)


def tiny_model(seed: int = 0) -> Model:
  return tiny_models.random_model(seed, **TINY)


def shape_model(width: int = 32, spec: str = "tiny") -> Model:
  """Enough of a Model for checkpoint metadata (spec and config), without params."""
  config = dataclasses.replace(tiny_models.CONFIG, **{**TINY, "width": width})
  return Model(config=config, params=None, tokenizer=None, spec=spec)


@functools.lru_cache(maxsize=None)
def _state_fn(batch: int | None, width: int, updates: int):
  mcfg = shape_model(width).config

  def one(key):
    k_init, k_x = jax.random.split(key)
    state = attractor.init_state(CFG, mcfg, k_init)
    for x in jax.random.normal(k_x, (updates, width)):
      state, _ = attractor.update(CFG, state, x)
    return state

  return jax.jit(one if batch is None else jax.vmap(one))


def make_state(batch: int | None = None, width: int = 32, updates: int = 3, seed: int = 0):
  """A state after a few updates (so strength, idle and step are not their initial values)."""
  key = jax.random.key(seed)
  return _state_fn(batch, width, updates)(key if batch is None else jax.random.split(key, batch))


def leaves(state) -> dict:
  return {f.name: np.asarray(getattr(state, f.name)) for f in dataclasses.fields(state)}


def assert_same_state(got, want):
  assert type(got) is AttractorState
  for name, w in leaves(want).items():
    g = np.asarray(getattr(got, name))
    assert g.dtype == w.dtype and g.shape == w.shape, name
    np.testing.assert_array_equal(g, w, err_msg=name)


def as_json(x):
  return json.loads(json.dumps(x))


def run_python(code: str, cwd, timeout: float = 300):
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env(), cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"subprocess failed:\n{out.stdout}\n{out.stderr[-4000:]}"
  return out


@pytest.fixture
def saved(tmp_path):
  """A good checkpoint of a single state: (path, state)."""
  state = make_state()
  path = tmp_path / "ck"
  checkpoint.save_state(path, state, memory=CFG, model=shape_model())
  return path, state


# Round trips and metadata.

@pytest.mark.parametrize("batch", [None, 4])
def test_state_round_trip(tmp_path, batch):
  state = make_state(batch)
  assert state.rng.dtype == jnp.uint32 and state.rng.shape[-1] == 2
  path = tmp_path / "ck"
  checkpoint.save_state(path, state, memory=CFG, model=shape_model(), note="x")
  restored = checkpoint.restore_state(path, memory=CFG, model="tiny")
  assert type(restored) is checkpoint.Restored
  assert_same_state(restored.state, state)
  if batch:
    assert restored.state.vectors.shape == (4, 1, CFG.num_attractors, 32)
    assert len({float(v) for v in np.asarray(restored.state.vectors)[:, 0, 0, 0]}) == 4
  assert restored.memory == CFG and restored.user == {"note": "x"}
  meta = restored.meta
  assert meta == checkpoint.read_meta(path)
  assert meta["format"] == checkpoint.FORMAT
  assert meta["memory_config"] == as_json(CFG.to_dict())
  assert checkpoint.memory_from_dict(meta["memory_config"]) == CFG
  assert meta["model"] == "tiny" and meta["width"] == 32 and meta["user"] == {"note": "x"}
  assert meta["model_config"] == as_json(dataclasses.asdict(shape_model().config))
  assert "note" not in meta  # the caller's keys live under "user" only
  assert meta["library_version"] == attractor_jax.__version__
  assert meta["batch_shape"] == ([] if batch is None else [batch])


def test_restore_takes_a_model_or_its_spec(saved):
  path, state = saved
  for model in (shape_model(), "tiny"):
    assert_same_state(checkpoint.restore_state(path, memory=CFG, model=model).state, state)


def test_user_metadata_round_trips_untouched(tmp_path):
  state, path = make_state(), tmp_path / "ck"
  aj.save_state(path, state, memory=CFG, model=shape_model(), note="x", nested={"a": [1, 2]})
  restored = aj.restore_state(path)
  assert type(restored) is aj.Restored
  assert_same_state(restored.state, state)
  assert restored.memory == CFG
  assert restored.user == {"note": "x", "nested": {"a": [1, 2]}}
  assert restored.meta["user"] == restored.user
  # keys named like the library's own stay the caller's: they never replace the format or memory
  aj.save_state(path, state, memory=CFG, model=shape_model(), format="mine", memory_config=0)
  restored = aj.restore_state(path)
  assert restored.user == {"format": "mine", "memory_config": 0}
  assert restored.meta["format"] == checkpoint.FORMAT and restored.memory == CFG


@pytest.mark.parametrize("bad,named", [
    (object(), "object"), ({1, 2}, "set"), (np.float32(1.5), "float32"), (b"raw", "bytes"),
    (float("nan"), "not JSON compliant"), (float("inf"), "not JSON compliant")])
def test_user_metadata_that_is_not_json_is_refused(tmp_path, bad, named):
  with pytest.raises(InputError, match=f"metadata must be JSON data.*{named}"):
    aj.save_state(tmp_path / "ck", make_state(), memory=CFG, model=shape_model(), note="x",
                  extra={"deep": [bad]})
  assert not (tmp_path / "ck").exists()


def test_written_metadata_is_format_5_with_memory_config(saved):
  """The file itself, as another reader sees it: the memory is "memory_config" (format 4 on)."""
  path, _ = saved
  assert checkpoint.FORMAT == "attractor-jax/5"
  raw = json.loads((path / "meta" / "metadata").read_text())
  assert raw["format"] == "attractor-jax/5"
  assert raw["memory_config"] == as_json(CFG.to_dict()) and "enabled" not in raw["memory_config"]
  assert "attractor_config" not in raw
  assert raw["user"] == {}


def test_multiscale_config_round_trips_through_metadata(tmp_path):
  cfg = dataclasses.replace(presets["multiscale"], layer=1, gate="similarity")
  state = attractor.init_state(cfg, shape_model().config, jax.random.key(3))
  checkpoint.save_state(tmp_path / "ck", state, memory=cfg, model=shape_model())
  restored = checkpoint.restore_state(tmp_path / "ck", memory=cfg)
  assert_same_state(restored.state, state)
  assert restored.memory == cfg and restored.memory.num_banks == cfg.num_banks > 1
  assert checkpoint.memory_from_dict(restored.meta["memory_config"]) == cfg


def test_overwrite_replaces_a_checkpoint(saved):
  path, _ = saved
  other = make_state(seed=9)
  checkpoint.save_state(path, other, memory=CFG, model=shape_model())
  assert_same_state(checkpoint.restore_state(path).state, other)


def test_overwrite_false_refuses_an_existing_checkpoint(saved):
  path, state = saved
  with pytest.raises(InputError, match="exists: pass overwrite=True"):
    checkpoint.save_state(path, make_state(seed=9), memory=CFG, model=shape_model(),
                          overwrite=False)
  assert_same_state(checkpoint.restore_state(path).state, state)


# Refusals.

def test_restore_refuses_another_config(saved):
  path, _ = saved
  with pytest.raises(InputError, match=r"config \(alpha: saved 0.1 vs given 0.3"):
    checkpoint.restore_state(path, memory=dataclasses.replace(CFG, alpha=0.3))
  with pytest.raises(InputError, match="num_attractors: saved 8 vs given 4"):
    checkpoint.restore_state(path, memory=dataclasses.replace(CFG, num_attractors=4))
  with pytest.raises(InputError, match="timescales"):
    checkpoint.restore_state(path, memory=dataclasses.replace(presets["multiscale"], layer=1))
  with pytest.raises(InputError, match="different memory config.*kind: saved 'attractor' vs "
                     "given 'hopfield'"):
    checkpoint.restore_state(path, memory=dataclasses.replace(presets["hopfield"], layer=1))


def test_restore_refuses_another_model(saved):
  path, _ = saved
  with pytest.raises(InputError, match="made with model 'tiny', not 'smollm2-135m'"):
    checkpoint.restore_state(path, model="smollm2-135m")
  with pytest.raises(InputError, match="made with model 'tiny', not 'other'"):
    checkpoint.restore_state(path, model=shape_model(spec="other"))


def test_typed_prng_key_is_refused(tmp_path):
  state = make_state()
  assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
  assert not jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
  with pytest.raises(InputError, match="typed PRNG key"):
    checkpoint.save_state(tmp_path / "ck", state.replace(rng=jax.random.key(0)), memory=CFG,
                          model=shape_model())
  assert not (tmp_path / "ck").exists()


def test_nothing_to_save_when_off(tmp_path):
  with pytest.raises(InputError, match="off"):
    checkpoint.save_state(tmp_path / "ck", None, memory=CFG, model=shape_model())
  with pytest.raises(InputError, match="memory=None: pass the memory config"):
    checkpoint.save_state(tmp_path / "ck", make_state(), memory=None, model=shape_model())
  assert not (tmp_path / "ck").exists()


def test_failed_overwrite_keeps_the_previous_checkpoint(saved, monkeypatch):
  path, state = saved

  def crash(self, *args, **kwargs):
    raise RuntimeError("simulated crash mid-save")

  monkeypatch.setattr(ocp.CompositeCheckpointHandler, "save", crash)
  with pytest.raises(RuntimeError, match="simulated"):
    checkpoint.save_state(path, make_state(seed=9), memory=CFG, model=shape_model())
  monkeypatch.undo()
  assert_same_state(checkpoint.restore_state(path).state, state)


# Damaged checkpoints: InputError, never a raw orbax or JSON error.

def _damaged(path, tmp_path, how):
  bad = tmp_path / "bad"
  shutil.copytree(path, bad)
  how(bad)
  return bad


def _garbage(rel, data):
  return lambda bad: (bad / rel).write_bytes(data)


def _truncate(rel):
  def cut(bad):
    data = (bad / rel).read_bytes()
    (bad / rel).write_bytes(data[: len(data) // 2])
  return cut


def _delete_data(bad):
  files = list((bad / "state" / "d").iterdir())
  assert files
  for f in files:
    f.unlink()


DAMAGE = {
    "state_metadata_deleted": lambda bad: (bad / "state" / "_METADATA").unlink(),
    "state_data_deleted": _delete_data,
    "state_manifest_deleted": lambda bad: (bad / "state" / "manifest.ocdbt").unlink(),
    "state_dir_deleted": lambda bad: shutil.rmtree(bad / "state"),
    "state_metadata_truncated": _truncate("state/_METADATA"),
    "meta_garbage": _garbage("meta/metadata", b"\x00\xffnot json at all"),
    "meta_empty": _garbage("meta/metadata", b""),
    "meta_truncated": _truncate("meta/metadata"),
    "meta_deleted": lambda bad: (bad / "meta" / "metadata").unlink(),
    "meta_wrong_format": _garbage("meta/metadata", json.dumps({"format": "other/9"}).encode()),
}


# orbax reports unread coroutines of a failed restore as unraisable exceptions: noise here
quiet_orbax = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@quiet_orbax
@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_checkpoint_raises_input_error(saved, tmp_path, how):
  path, _ = saved
  bad = _damaged(path, tmp_path, DAMAGE[how])
  with pytest.raises(InputError, match="bad"):
    checkpoint.restore_state(bad)


def test_missing_directory_raises_input_error(tmp_path):
  with pytest.raises(InputError, match="does not exist"):
    checkpoint.restore_state(tmp_path / "nowhere")
  with pytest.raises(InputError, match="does not exist"):
    checkpoint.read_meta(tmp_path / "nowhere")


@quiet_orbax
@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_any_file_damaged_restores_exactly_or_raises_input_error(saved, tmp_path, damage):
  """Every file of `state/` in turn: never a raw exception, never silently wrong values."""
  path, state = saved
  files = [f.relative_to(path) for f in sorted((path / "state").rglob("*")) if f.is_file()]
  assert len(files) >= 4
  outcomes = {}
  for i, rel in enumerate(files):
    bad = tmp_path / f"bad{i}"
    shutil.copytree(path, bad)
    if damage == "delete":
      (bad / rel).unlink()
    else:
      _truncate(rel)(bad)
    try:
      restored = checkpoint.restore_state(bad)
    except InputError as e:
      assert "incomplete or corrupted" in str(e)
      outcomes[str(rel)] = "InputError"
    else:
      assert_same_state(restored.state, state)
      outcomes[str(rel)] = "ok"
  assert "InputError" in outcomes.values(), outcomes


@pytest.mark.parametrize("text", ["[1, 2]", "null", "0", json.dumps({"format": checkpoint.FORMAT})])
def test_meta_that_is_json_but_not_metadata_raises_input_error(saved, tmp_path, text):
  path, _ = saved
  bad = _damaged(path, tmp_path, _garbage("meta/metadata", text.encode()))
  with pytest.raises(InputError):
    checkpoint.restore_state(bad)


# Runs: save in one process, resume in another.

_GENERATE_100 = """
import dataclasses, numpy as np
from attractor_jax.generation import generate
from test_checkpoint import CFG, PROMPT, tiny_model
g = generate(tiny_model(0), PROMPT, 100, memory=CFG, seed=7, temperature=0.8)
np.save("a_tokens.npy", np.asarray(g.tokens))
np.savez("a_state.npz", **{f.name: np.asarray(getattr(g.state, f.name))
                            for f in dataclasses.fields(g.state)})
"""

_GENERATE_50_SAVE = """
import numpy as np
from attractor_jax import checkpoint
from attractor_jax.generation import generate
from test_checkpoint import CFG, PROMPT, tiny_model
model = tiny_model(0)
g = generate(model, PROMPT, 50, memory=CFG, seed=7, temperature=0.8)
assert g.memory == CFG
checkpoint.save_run("run", g, model)
np.save("b_tokens.npy", np.asarray(g.tokens))
"""

_RESTORE_RESUME = """
import dataclasses, json, numpy as np, pytest
from attractor_jax import checkpoint
from attractor_jax.errors import InputError
from attractor_jax.generation import resume
from attractor_jax.sampling import SamplingState
from test_checkpoint import CFG, shape_model, tiny_model
model = tiny_model(0)
with pytest.raises(InputError, match="different memory config"):
  checkpoint.restore_run("run", dataclasses.replace(CFG, beta=5.0), model)
with pytest.raises(InputError, match="different memory config"):
  checkpoint.restore_run("run", None, model)
with pytest.raises(InputError, match="not 'other'"):
  checkpoint.restore_run("run", CFG, dataclasses.replace(model, spec="other"))
with pytest.raises(InputError, match="holds a run, not a state"):
  checkpoint.restore_state("run")
run = checkpoint.restore_run("run", CFG, model)
assert run.memory == CFG and run.user == {} and set(run.state) == {"rows", "sample_key", "tokens"}
rows = run.state["rows"]
assert type(rows) is SamplingState and rows.tokens is None and rows.trace is None
assert rows.position.shape == (1,) and run.state["sample_key"].dtype == np.uint32
saved_step = int(np.asarray(rows.memory_state.step).reshape(()))
g = resume(model, run.state, 50, memory=CFG, temperature=0.8)
assert g.memory == CFG
np.save("c_tokens.npy", np.asarray(g.tokens))
np.save("c_prompt_tokens.npy", np.asarray(g.prompt_tokens))
np.savez("c_state.npz", **{f.name: np.asarray(getattr(g.state, f.name))
                            for f in dataclasses.fields(g.state)})
json.dump({**run.meta, "saved_step": saved_step}, open("c_meta.json", "w"))
"""


def test_resume_in_a_fresh_process_continues_exactly(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=child_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for code in (_GENERATE_100, _GENERATE_50_SAVE)]
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"subprocess failed:\n{out}\n{err[-4000:]}"
  run_python(_RESTORE_RESUME, tmp_path)

  a, b, c = (np.load(tmp_path / f"{x}_tokens.npy") for x in "abc")
  assert len(a) == 100 and len(b) == len(c) == 50
  assert len(set(a.tolist())) > 10  # sampled, not stuck on one token
  np.testing.assert_array_equal(b, a[:50])
  np.testing.assert_array_equal(c, a[50:])
  np.testing.assert_array_equal(np.load(tmp_path / "c_prompt_tokens.npy"), PROMPT + b.tolist())
  a_state, c_state = np.load(tmp_path / "a_state.npz"), np.load(tmp_path / "c_state.npz")
  assert set(a_state) == set(c_state) == {f.name for f in dataclasses.fields(AttractorState)}
  for name in a_state:
    assert a_state[name].dtype == c_state[name].dtype, name
    np.testing.assert_array_equal(c_state[name], a_state[name], err_msg=name)
  assert int(c_state["step"]) == 100
  meta = json.loads((tmp_path / "c_meta.json").read_text())
  assert meta["kind"] == "run" and meta["model"] == "tiny"
  assert meta["format"] == "attractor-jax/5" and "attractor_config" not in meta
  assert meta["memory_config"] == as_json(CFG.to_dict()) and meta["user"] == {}
  assert meta["saved_step"] == 50 and meta["position"] == len(PROMPT) + 49
  assert meta["num_tokens"] == len(PROMPT) + 50 and meta["prompt_len"] == len(PROMPT)
  assert meta["cache_len"] == 128 and meta["library_version"] == attractor_jax.__version__


def test_run_without_a_memory_resumes_exactly(tmp_path):
  """Preset off is memory=None: its run saves, restores with None only, and resumes exactly."""
  model = tiny_model(0)
  kw = dict(memory=None, seed=7, temperature=0.8)
  whole = aj.generate(model, PROMPT, 20, **kw)
  first = aj.generate(model, PROMPT, 10, **kw)
  assert first.memory is None and first.state is None and first.tokens == whole.tokens[:10]
  checkpoint.save_run(tmp_path / "run", first, model)
  meta = checkpoint.read_meta(tmp_path / "run")
  assert meta["kind"] == "run" and meta["memory_config"] is None
  with pytest.raises(InputError, match="different memory config"):
    checkpoint.restore_run(tmp_path / "run", CFG, model)
  run = checkpoint.restore_run(tmp_path / "run", None, model)
  assert run.memory is None and run.state["rows"].memory_state is None
  rest = generation.resume(model, run.state, 10, memory=None, temperature=0.8)
  assert rest.tokens == whole.tokens[10:] and rest.state is None
  assert rest.prompt_tokens == PROMPT + first.tokens


# A save killed with SIGKILL.

_SAVE_FOREVER = """
import dataclasses, pathlib, sys
from attractor_jax import checkpoint
from test_checkpoint import CFG, make_state, shape_model
base = make_state(batch=256, width=256, updates=1)  # about 2 MB of vectors
model = shape_model(256)
checkpoint.save_state("ck_good", base, memory=CFG, model=model, note="good")
for i in range(1, 100_000):
  state = base.replace(vectors=base.vectors + i, step=base.step + i)
  checkpoint.save_state("ck_live", state, memory=CFG, model=model, note="live")
  pathlib.Path("saved").write_text(str(i))
"""


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_sigkill_during_save_leaves_the_good_checkpoint(tmp_path, delay):
  proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SAVE_FOREVER)], env=child_env(),
                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 120
    while not (tmp_path / "ck_good" / "commit_success.txt").exists():
      assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
      assert time.monotonic() < deadline, "the good checkpoint never appeared"
      time.sleep(0.02)
    if delay:
      while not (tmp_path / "saved").exists():  # at least one live save went through
        assert proc.poll() is None, proc.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, "no live save finished"
        time.sleep(0.02)
      time.sleep(delay)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
  assert proc.returncode == -signal.SIGKILL

  good = checkpoint.restore_state(tmp_path / "ck_good", memory=CFG, model="tiny")
  assert good.user == {"note": "good"}
  base = good.state
  assert base.vectors.shape == (256, 1, CFG.num_attractors, 256)
  assert np.all(np.asarray(base.step) == 1)
  try:  # missing (killed before its first commit, or mid-overwrite) or a whole save
    live = checkpoint.restore_state(tmp_path / "ck_live", memory=CFG)
  except InputError:
    pass
  else:  # a whole save, never a mix of two
    assert live.user == {"note": "live"}
    i = int(np.asarray(live.state.step)[0]) - 1
    assert i >= 1
    np.testing.assert_array_equal(np.asarray(live.state.step), np.asarray(base.step) + i)
    np.testing.assert_array_equal(np.asarray(live.state.vectors), np.asarray(base.vectors) + i)
    if (tmp_path / "saved").exists():
      assert i >= int((tmp_path / "saved").read_text())
  # what the kill left behind does not block the next save
  checkpoint.save_state(tmp_path / "ck_live", base, memory=good.memory, model=shape_model(256),
                        **good.user)
  again = checkpoint.restore_state(tmp_path / "ck_live")
  assert_same_state(again.state, base)
  assert again.user == {"note": "good"}


# Checkpoints of format attractor-jax/3 and their generations, made by git 472de6b
# (tests/data/checkpoints_format3/make.py).

OLD_MEMORY = AttractorConfig(layer=1)
OLD_SAMPLING = dict(temperature=0.8, top_p=0.9)


@pytest.fixture(scope="module")
def format3(tmp_path_factory):
  """A copy of the committed checkpoints (restoring never touches the originals), the
  expected values, and the model they were made with."""
  where = tmp_path_factory.mktemp("format3")
  for name in ("state_v3", "run_v3"):
    shutil.copytree(FORMAT3 / name, where / name)
  expected = json.loads((FORMAT3 / "expected.json").read_text())
  assert (expected["prompt"], expected["seed"]) == ("hello world", 3)
  assert (expected["temperature"], expected["top_p"]) == (0.8, 0.9)
  return where, expected, tiny_models.random_model(tokenizer=True)


@pytest.mark.parametrize("name,restore", [
    ("state_v3", lambda path, model: aj.restore_state(path, memory=OLD_MEMORY, model=model)),
    ("run_v3", lambda path, model: checkpoint.restore_run(path, OLD_MEMORY, model))])
def test_an_older_format_names_the_last_commit_that_reads_it(format3, name, restore):
  """Formats 2-4 are no longer read: one line names the format and the commit to convert with."""
  where, _, model = format3
  with pytest.raises(InputError, match=r"'attractor-jax/3', which this version no longer reads: "
                                       r"restore it with attractor-jax at commit 75be428"):
    restore(where / name, model)


def test_format_3_generation_is_unchanged(format3):
  """Today's code generates what 472de6b generated, token for token."""
  _, expected, model = format3
  g = aj.generate(model, expected["prompt"], 22, memory=OLD_MEMORY, seed=expected["seed"],
                  **OLD_SAMPLING)
  assert g.tokens == expected["straight_22_tokens"]
  assert g.tokens[:12] == expected["first_tokens"]
  assert len(set(g.tokens)) > 8  # sampled, not stuck on one token
