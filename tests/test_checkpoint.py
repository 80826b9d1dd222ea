"""Orbax checkpoints of attractor states and runs: round trips, refusals, damage, resume, kill."""

import dataclasses
import functools
import json
import os
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
from attractor_jax import attractor, checkpoint
from attractor_jax.attractor import AttractorState
from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.model import Model
from attractor_jax.presets import presets
from attractor_jax.transformer import Decoder

TESTS = pathlib.Path(__file__).parent
CFG = dataclasses.replace(presets["seed"], layer=1)  # the tiny model has 2 layers
PROMPT = [5, 17, 33, 2, 60, 8, 41]


def tiny_config(width: int = 32) -> ModelConfig:
  return ModelConfig(
      family="llama", vocab_size=97, width=width, num_layers=2, num_heads=4, num_kv_heads=2,
      head_dim=8, mlp_width=48, max_len=128, norm_eps=1e-6, tie_embeddings=False)


def tiny_model(seed: int = 0) -> Model:
  """A 2-layer llama-style model with random params (no tokenizer: ids in, eos -1)."""
  cfg = tiny_config()
  tokens = jnp.zeros((1, 1), jnp.int32)
  params = jax.jit(Decoder(cfg).init)(jax.random.key(seed), tokens, tokens)["params"]
  return Model(config=cfg, params=params, tokenizer=None, spec="tiny")


def shape_model(width: int = 32, spec: str = "tiny") -> Model:
  """Enough of a Model for `metadata` (spec and width), without params."""
  return Model(config=tiny_config(width), params=None, tokenizer=None, spec=spec)


@functools.lru_cache(maxsize=None)
def _state_fn(batch: int | None, width: int, updates: int):
  mcfg = tiny_config(width)

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


def run_env() -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(TESTS))


def run_python(code: str, cwd, timeout: float = 300):
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=run_env(), cwd=cwd,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"subprocess failed:\n{out.stdout}\n{out.stderr[-4000:]}"
  return out


@pytest.fixture
def saved(tmp_path):
  """A good checkpoint of a single state: (path, state)."""
  state = make_state()
  path = tmp_path / "ck"
  checkpoint.save_state(path, state, checkpoint.metadata(CFG, shape_model()))
  return path, state


# Round trips and metadata.

@pytest.mark.parametrize("batch", [None, 4])
def test_state_round_trip(tmp_path, batch):
  state = make_state(batch)
  assert state.rng.dtype == jnp.uint32 and state.rng.shape[-1] == 2
  path = tmp_path / "ck"
  checkpoint.save_state(path, state, checkpoint.metadata(CFG, shape_model(), note="x"))
  restored = checkpoint.restore_state(path, expect_config=CFG, expect_model="tiny")
  assert_same_state(restored.state, state)
  if batch:
    assert restored.state.vectors.shape == (4, 1, CFG.num_attractors, 32)
    assert len({float(v) for v in np.asarray(restored.state.vectors)[:, 0, 0, 0]}) == 4
  meta = restored.meta
  assert meta == checkpoint.read_meta(path)
  assert meta["format"] == checkpoint.FORMAT
  assert meta["attractor_config"] == as_json(checkpoint.config_to_dict(CFG))
  assert checkpoint.config_from_dict(meta["attractor_config"]) == CFG
  assert meta["model"] == "tiny" and meta["width"] == 32 and meta["note"] == "x"
  assert meta["library_version"] == attractor_jax.__version__
  assert meta["batch_shape"] == ([] if batch is None else [batch])


def test_multiscale_config_round_trips_through_metadata(tmp_path):
  cfg = dataclasses.replace(presets["multiscale"], layer=1, gate="similarity")
  state = attractor.init_state(cfg, tiny_config(), jax.random.key(3))
  checkpoint.save_state(tmp_path / "ck", state, checkpoint.metadata(cfg, shape_model()))
  restored = checkpoint.restore_state(tmp_path / "ck", expect_config=cfg)
  assert_same_state(restored.state, state)
  assert checkpoint.config_from_dict(restored.meta["attractor_config"]) == cfg


def test_overwrite_replaces_a_checkpoint(saved):
  path, _ = saved
  other = make_state(seed=9)
  checkpoint.save_state(path, other, checkpoint.metadata(CFG, shape_model()))
  assert_same_state(checkpoint.restore_state(path).state, other)


# Refusals.

def test_restore_refuses_another_config(saved):
  path, _ = saved
  with pytest.raises(InputError, match=r"config \(alpha: saved 0.1 vs given 0.3"):
    checkpoint.restore_state(path, expect_config=dataclasses.replace(CFG, alpha=0.3))
  with pytest.raises(InputError, match="num_attractors: saved 8 vs given 4"):
    checkpoint.restore_state(path, expect_config=dataclasses.replace(CFG, num_attractors=4))
  with pytest.raises(InputError, match="timescales"):
    checkpoint.restore_state(path, expect_config=dataclasses.replace(presets["multiscale"],
                                                                     layer=1))


def test_restore_refuses_another_model(saved):
  path, _ = saved
  with pytest.raises(InputError, match="made with model 'tiny', not 'smollm2-135m'"):
    checkpoint.restore_state(path, expect_model="smollm2-135m")


def test_typed_prng_key_is_refused(tmp_path):
  state = make_state()
  assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
  assert not jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)
  with pytest.raises(InputError, match="typed PRNG key"):
    checkpoint.save_state(tmp_path / "ck", state.replace(rng=jax.random.key(0)),
                          checkpoint.metadata(CFG, shape_model()))
  assert not (tmp_path / "ck").exists()


def test_nothing_to_save_when_off(tmp_path):
  with pytest.raises(InputError, match="off"):
    checkpoint.save_state(tmp_path / "ck", None, checkpoint.metadata(CFG, shape_model()))


def test_failed_overwrite_keeps_the_previous_checkpoint(saved, monkeypatch):
  path, state = saved

  def crash(self, *args, **kwargs):
    raise RuntimeError("simulated crash mid-save")

  monkeypatch.setattr(ocp.CompositeCheckpointHandler, "save", crash)
  with pytest.raises(RuntimeError, match="simulated"):
    checkpoint.save_state(path, make_state(seed=9), checkpoint.metadata(CFG, shape_model()))
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


@pytest.mark.parametrize("kind,readable", [(None, True), ("run", False)])
def test_format_2_states_restore_and_format_2_runs_are_refused(saved, kind, readable):
  """Format 3 changed only the KV cache layout: a state (no cache) of format 2 still reads."""
  path, state = saved
  meta_file = path / "meta" / "metadata"
  meta = json.loads(meta_file.read_text()) | {"format": "attractor-jax/2"}
  if kind:
    meta["kind"] = kind
  meta_file.write_text(json.dumps(meta))
  if readable:
    assert_same_state(checkpoint.restore_state(path).state, state)
  else:
    with pytest.raises(InputError, match="'attractor-jax/2'.*save it again"):
      checkpoint.read_meta(path)


# Runs: save in one process, resume in another.

_GENERATE_100 = """
import dataclasses, numpy as np
from attractor_jax.generation import generate
from test_checkpoint import CFG, PROMPT, tiny_model
g = generate(tiny_model(0), PROMPT, 100, attractor=CFG, seed=7, temperature=0.8)
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
g = generate(model, PROMPT, 50, attractor=CFG, seed=7, temperature=0.8)
checkpoint.save_run("run", g, CFG, model)
np.save("b_tokens.npy", np.asarray(g.tokens))
"""

_RESTORE_RESUME = """
import dataclasses, json, numpy as np, pytest
from attractor_jax import checkpoint
from attractor_jax.errors import InputError
from attractor_jax.generation import resume
from attractor_jax.sampling import Carry
from test_checkpoint import CFG, shape_model, tiny_model
model = tiny_model(0)
with pytest.raises(InputError, match="different memory config"):
  checkpoint.restore_run("run", dataclasses.replace(CFG, beta=5.0), model)
with pytest.raises(InputError, match="not 'other'"):
  checkpoint.restore_run("run", CFG, dataclasses.replace(model, spec="other"))
with pytest.raises(InputError):
  checkpoint.restore_state("run")
run = checkpoint.restore_run("run", CFG, model)
assert type(run.state["carry"]) is Carry and run.state["sample_key"].dtype == np.uint32
g = resume(model, run.state, 50, attractor=CFG, temperature=0.8)
np.save("c_tokens.npy", np.asarray(g.tokens))
np.save("c_prompt_tokens.npy", np.asarray(g.prompt_tokens))
np.savez("c_state.npz", **{f.name: np.asarray(getattr(g.state, f.name))
                            for f in dataclasses.fields(g.state)})
json.dump(run.meta, open("c_meta.json", "w"))
"""


def test_resume_in_a_fresh_process_continues_exactly(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=run_env(),
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
  assert meta["attractor_config"] == as_json(checkpoint.config_to_dict(CFG))
  assert meta["step"] == 50 and meta["position"] == len(PROMPT) + 49
  assert meta["num_tokens"] == len(PROMPT) + 50 and meta["prompt_len"] == len(PROMPT)
  assert meta["cache_len"] == 128 and meta["library_version"] == attractor_jax.__version__


# A save killed with SIGKILL.

_SAVE_FOREVER = """
import dataclasses, pathlib, sys
from attractor_jax import checkpoint
from test_checkpoint import CFG, make_state, shape_model
base = make_state(batch=256, width=256, updates=1)  # about 2 MB of vectors
meta = checkpoint.metadata(CFG, shape_model(256))
checkpoint.save_state("ck_good", base, meta)
for i in range(1, 100_000):
  state = base.replace(vectors=base.vectors + i, step=base.step + i)
  checkpoint.save_state("ck_live", state, meta)
  pathlib.Path("saved").write_text(str(i))
"""


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_sigkill_during_save_leaves_the_good_checkpoint(tmp_path, delay):
  proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SAVE_FOREVER)], env=run_env(),
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

  good = checkpoint.restore_state(tmp_path / "ck_good", expect_config=CFG, expect_model="tiny")
  base = good.state
  assert base.vectors.shape == (256, 1, CFG.num_attractors, 256)
  assert np.all(np.asarray(base.step) == 1)
  try:  # missing (killed before its first commit, or mid-overwrite) or a whole save
    live = checkpoint.restore_state(tmp_path / "ck_live", expect_config=CFG)
  except InputError:
    pass
  else:  # a whole save, never a mix of two
    i = int(np.asarray(live.state.step)[0]) - 1
    assert i >= 1
    np.testing.assert_array_equal(np.asarray(live.state.step), np.asarray(base.step) + i)
    np.testing.assert_array_equal(np.asarray(live.state.vectors), np.asarray(base.vectors) + i)
    if (tmp_path / "saved").exists():
      assert i >= int((tmp_path / "saved").read_text())
  # what the kill left behind does not block the next save
  checkpoint.save_state(tmp_path / "ck_live", base, good.meta)
  assert_same_state(checkpoint.restore_state(tmp_path / "ck_live").state, base)
