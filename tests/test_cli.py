"""The CLI contract: bad input exits 2 with one line naming the value; `generate --json`.

Most cases call `cli.main` in-process; where a case gets past the model load, `aj.load` is
patched to hand back the session's default model instead of loading it again.
"""

import json
import pathlib
import subprocess
import sys

import pytest

import attractor_jax as aj
from attractor_jax import checkpoint, cli
from tiny_models import random_model

PROMPT = "Once upon a time, in a small village by the sea, there lived"


@pytest.fixture
def files(tmp_path):
  """Paths of a missing, a non-UTF-8 and an empty text file."""
  (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
  (tmp_path / "empty.txt").write_text("  \n\n")
  return {name: str(tmp_path / f"{name}.txt") for name in ("missing", "latin1", "empty")}


def _main(capsys, argv):
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def _assert_refused(code, out, err, named):
  assert code == 2, (out, err)
  assert "Traceback" not in err and out == ""
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert named in lines[0], lines[0]


def _case_id(v):
  return " ".join(a if a.strip() else repr(a) for a in v) if isinstance(v, list) else "-"


def _use_loaded(monkeypatch, model):
  def load(spec="smollm2-135m", dtype=None):
    assert spec == "smollm2-135m", spec
    return model
  monkeypatch.setattr(aj, "load", load)


# Refused before any model is loaded.
EARLY = [
    (["generate", "--prompt", "hi", "--preset", "bogus"], "'bogus'"),
    (["generate", "--prompt", "hi", "--model", "no-such-model"], "'no-such-model'"),
    (["generate", "--prompt", "hi", "--model", "/nonexistent/m.gguf"], "/nonexistent/m.gguf"),
    (["generate", "--prompt", "hi", "--bogus", "1"], "--bogus"),
    (["generate", "--prompt", "hi", "--max-new-tokens", "many"], "'many'"),
    (["generate"], "--prompt"),
    (["frobnicate"], "'frobnicate'"),
    (["report"], "'report'"),  # moved out of the CLI: python -m experiments.report
    (["bench", "--preset", "seed"], "--preset"),
    (["generate", "--prompt", "hi", "--save-state", "{missing}"], "--preset other than off"),
    (["generate", "--prompt", "hi", "--preset", "off", "--load-state", "{missing}"],
     "--preset other than off"),
    (["ppl"], "--text-file"),
    (["ppl", "--text-file", "{missing}"], "missing.txt"),
    (["ppl", "--text-file", "{latin1}"], "latin1.txt"),
    (["ppl", "--text-file", "{empty}"], "empty.txt"),
    (["ppl", "--text-file", "{empty}", "--preset", "nope"], "'nope'"),
]


@pytest.mark.parametrize("argv,named", EARLY, ids=_case_id)
def test_bad_input_before_loading_exits_2(capsys, files, argv, named):
  argv = [a.format(**files) for a in argv]
  _assert_refused(*_main(capsys, argv), named)


# Refused once the model is loaded (the checks live in the library calls).
LATE = [
    (["generate", "--prompt", ""], "empty"),
    (["generate", "--prompt", "   "], "empty"),
    (["generate", "--prompt", "hi", "--top-p", "1.5"], "top_p=1.5"),
    (["generate", "--prompt", "hi", "--top-p", "0"], "top_p=0.0"),
    (["generate", "--prompt", "hi", "--temperature", "-1"], "temperature=-1.0"),
    (["generate", "--prompt", "hi", "--temperature", "nan"], "temperature=nan"),
    (["generate", "--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens=0"),
    (["generate", "--prompt", "hi", "--max-new-tokens", "9000"], "9000"),
    (["generate", "--prompt", "hi", "--seed", "-3"], "seed=-3"),
    (["ppl", "--text-file", "{text}", "--preset", "seed", "--seeds", "-1"], "seeds=-1"),
    (["ppl", "--text-file", "{text}", "--seeds", "0"], "seeds=0"),
]


@pytest.mark.parametrize("argv,named", LATE, ids=_case_id)
def test_bad_input_after_loading_exits_2(capsys, monkeypatch, tmp_path, smollm2, argv, named):
  _use_loaded(monkeypatch, smollm2)
  (tmp_path / "text.txt").write_text("Some text to score. " * 20)
  argv = [a.format(text=tmp_path / "text.txt") for a in argv]
  _assert_refused(*_main(capsys, argv), named)


@pytest.mark.parametrize("argv,named", [
    (["generate", "--prompt", "hi", "--preset", "bogus"], "'bogus'"),
    (["generate", "--prompt", "hi", "--unknown-option"], "--unknown-option"),
])
def test_process_exit_status_and_stderr(argv, named):
  """The real process: status 2, one line on stderr, no traceback."""
  proc = subprocess.run([sys.executable, "-m", "attractor_jax.cli", *argv], capture_output=True,
                        text=True, timeout=120)
  _assert_refused(proc.returncode, proc.stdout, proc.stderr, named)


def test_generate_json_then_save_and_load_state(capsys, monkeypatch, tmp_path, smollm2):
  _use_loaded(monkeypatch, smollm2)
  saved = tmp_path / "state"
  argv = ["generate", "--prompt", PROMPT, "--max-new-tokens", "8", "--preset", "seed",
          "--seed", "1", "--json"]
  code, out, _ = _main(capsys, argv + ["--save-state", str(saved)])
  assert code == 0
  first = json.loads(out)
  assert {"text", "tokens", "tokens_per_s", "memory"} <= set(first) and "attractor" not in first
  assert len(first["tokens"]) == 8 and first["text"] == smollm2.tokenizer.decode(first["tokens"])
  assert first["tokens_per_s"] > 0
  assert first["memory"]["kind"] == "attractor" and first["memory"]["step"] == 8
  assert "enabled" not in first["memory"]
  restored = checkpoint.restore_state(saved, memory=aj.presets["seed"], model="smollm2-135m")
  assert int(restored.state.step) == 8
  assert restored.user["preset"] == "seed" and restored.user["position"] == (
      len(first["prompt_tokens"]) + 7)

  code, out, _ = _main(capsys, argv + ["--load-state", str(saved)])
  assert code == 0
  second = json.loads(out)
  assert second["memory"]["step"] == 8 + len(second["tokens"])  # continued the saved memory
  state = checkpoint.restore_state(saved).state
  want = aj.generate(smollm2, PROMPT, 8, memory=aj.presets["seed"], seed=1, state=state)
  assert second["tokens"] == want.tokens
  assert second["memory"] == want.summary()

  code, out, err = _main(capsys, [*argv[:6], "gated", "--load-state", str(saved)])
  _assert_refused(code, out, err, "different memory config")


def test_generate_json_without_a_memory_prints_memory_null(capsys, monkeypatch):
  """Preset off is no memory: `memory` is null, and the tokens are the baseline model's."""
  model = random_model(tokenizer=True)
  _use_loaded(monkeypatch, model)
  code, out, _ = _main(capsys, ["generate", "--prompt", "Once", "--max-new-tokens", "5",
                                "--temperature", "0.8", "--seed", "2", "--json"])
  assert code == 0
  got = json.loads(out)
  assert got["memory"] is None and got["preset"] == "off" and "attractor" not in got
  want = aj.generate(model, "Once", 5, memory=None, seed=2, temperature=0.8)
  assert got["tokens"] == want.tokens and got["prompt_tokens"] == want.prompt_tokens


def test_the_compile_cache_follows_the_environment(monkeypatch, tmp_path):
  import jax

  from attractor_jax import compile_cache

  calls = []
  monkeypatch.setattr(jax.config, "update", lambda key, value: calls.append((key, value)))
  assert compile_cache.enable({"JAX_COMPILATION_CACHE_DIR": "/x"}) == pathlib.Path("/x")
  assert compile_cache.enable({compile_cache.ENV: "off"}) is None and calls == []
  assert compile_cache.enable({compile_cache.ENV: str(tmp_path)}) == tmp_path
  assert calls == [("jax_compilation_cache_dir", str(tmp_path))]
  assert compile_cache.enable({}) == compile_cache.cache_dir() / "xla"
