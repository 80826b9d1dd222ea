"""Bad input, one case each: the Python API raises InputError naming the value, the CLI exits 2
with one line on stderr and no traceback. Cases already covered by test_cli, test_loading,
test_generation, test_sweep and test_attractor are not repeated here."""

import dataclasses
import math
import re
import subprocess
import sys

import gguf
import jax
import numpy as np
import pytest
import safetensors.numpy
import transformers

import attractor_jax as aj
from attractor_jax import cli, seed_sweep
from attractor_jax.attractor import AttractorConfig, Timescale
from attractor_jax.errors import InputError
from attractor_jax.presets import presets
from test_cli import _assert_refused
from tiny_models import random_model

SEED1 = dataclasses.replace(presets["seed"], layer=1)  # K=8, hosted on the tiny model's layer 1
PROMPT = [5, 17, 42, 3, 60, 9]


@pytest.fixture(scope="module")
def tiny():
  return random_model(tokenizer=True)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
  """Model and text files that must be refused, by name."""
  d = tmp_path_factory.mktemp("bad")
  writer = gguf.GGUFWriter(str(d / "qwen.gguf"), "qwen2")
  writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  (d / "garbage.gguf").write_bytes(b"not a gguf file")
  (d / "dir.gguf").mkdir()
  (d / "textdir").mkdir()
  (d / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  (d / "text.txt").write_text("Some text to score. " * 20)
  _hf_dir(d / "no_weights", down=(16, 32), weights=False)
  _hf_dir(d / "mismatched", down=(16, 40))
  return {p.name.split(".")[0]: str(p) for p in d.iterdir()}


def _hf_dir(path, down, weights=True):
  """A 1-layer llama HF directory (config.json + safetensors) with mlp.down_proj of `down`."""
  V, D, F, H, KV, hd = 64, 16, 32, 2, 1, 8
  transformers.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
                           num_attention_heads=H, num_key_value_heads=KV,
                           tie_word_embeddings=True).save_pretrained(path)
  if not weights:
    return
  p = "model.layers.0."
  shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,),
            p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
            p + "self_attn.q_proj.weight": (H * hd, D), p + "self_attn.k_proj.weight": (KV * hd, D),
            p + "self_attn.v_proj.weight": (KV * hd, D), p + "self_attn.o_proj.weight": (D, H * hd),
            p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
            p + "mlp.down_proj.weight": down}
  safetensors.numpy.save_file({k: np.zeros(s, np.float32) for k, s in shapes.items()},
                              str(path / "model.safetensors"))


# ---- model specs and files ----

MODEL_FILES = [("qwen", "'qwen2'"), ("garbage", "garbage.gguf"), ("dir", "dir.gguf"),
               ("no_weights", "safetensors"), ("mismatched", "(40, 16)")]


@pytest.mark.parametrize("name,named", MODEL_FILES)
def test_load_refuses_bad_model_files(bad_files, name, named):
  with pytest.raises(InputError, match=re.escape(named)):
    aj.load(bad_files[name])


@pytest.mark.parametrize("name,named", MODEL_FILES)
def test_cli_refuses_bad_model_files(capsys, bad_files, name, named):
  code = cli.main(["generate", "--prompt", "hi", "--model", bad_files[name]])
  _assert_refused(code, *capsys.readouterr(), named)


def test_cli_hub_id_offline(capsys, monkeypatch):
  import huggingface_hub.constants
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  code = cli.main(["generate", "--prompt", "hi", "--model", "someorg/somemodel"])
  _assert_refused(code, *capsys.readouterr(), "someorg/somemodel")


def test_process_refuses_unsupported_gguf(bad_files):
  """The real process, for a file the loader opens: status 2, one line, no traceback."""
  proc = subprocess.run([sys.executable, "-m", "attractor_jax.cli", "generate", "--prompt", "hi",
                         "--model", bad_files["qwen"]], capture_output=True, text=True, timeout=120)
  _assert_refused(proc.returncode, proc.stdout, proc.stderr, "'qwen2'")


# ---- the CLI with a (tiny) model loaded ----

CLI_CASES = [
    (["ppl", "--text-file", "{text}", "--window", "100000"], "window=100000"),
    (["ppl", "--text-file", "{text}", "--window", "1"], "window=1"),
    (["ppl", "--text-file", "{textdir}"], "textdir"),
    (["sweep", "--task", "ppl", "--text-file", "{latin1}"], "latin1.txt"),
    (["sweep", "--task", "ppl", "--text-file", "{text}", "--resume-dir", "x"], "resume_dir"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--seeds", "0"], "seeds=0"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--seeds", "-2"], "seeds=-2"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--batch-size", "0"], "batch_size=0"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--temperature", "-0.5"],
     "temperature=-0.5"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--top-p", "2"], "top_p=2.0"),
    (["sweep", "--task", "generate", "--prompt", "hi", "--max-new-tokens", "300"], "300"),
    (["sweep", "--task", "generate", "--prompt", " "], "empty"),
]


@pytest.mark.parametrize("argv,named", CLI_CASES, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else "-")
def test_cli_refuses_with_a_model(capsys, monkeypatch, bad_files, tiny, argv, named):
  monkeypatch.setattr(aj, "load", lambda spec="smollm2-135m", dtype=None: tiny)
  code = cli.main([a.format(**bad_files) for a in argv])
  _assert_refused(code, *capsys.readouterr(), named)


# ---- the Python API ----

def test_generate_refuses_token_ids_outside_the_vocabulary(tiny):
  for bad in (64, -1):
    with pytest.raises(InputError, match=f"token id {bad} .*64"):
      aj.generate(tiny, [1, bad, 2], 4)


def test_perplexity_refuses_empty_text_wide_windows_and_no_seeds(tiny):
  with pytest.raises(InputError, match="empty"):
    aj.perplexity(tiny, " \n")
  with pytest.raises(InputError, match="window=100000"):
    aj.perplexity(tiny, "text " * 50, window=100000)
  with pytest.raises(InputError, match="seeds=0"):
    aj.perplexity(tiny, "text " * 50, window=8, memory=SEED1, seeds=0)


@pytest.mark.parametrize("kwargs,named", [
    (dict(batch_size=0), "batch_size=0"), (dict(batch_size=2.5), "batch_size=2.5"),
    (dict(batch_size=True), "batch_size=True"),
    (dict(temperature=-1.0), "temperature=-1.0"), (dict(top_p=0.0), "top_p=0.0"),
])
def test_generate_seeds_refuses_bad_arguments(tiny, kwargs, named):
  with pytest.raises(InputError, match=re.escape(named)):
    aj.generate_seeds(tiny, PROMPT, 4, memory=SEED1, **{"seeds": 2, **kwargs})


def test_sweep_ppl_refuses_generate_only_options(tiny):
  for kw in (dict(batch_size=2), dict(resume_dir="somewhere")):
    with pytest.raises(InputError, match="batch_size and resume_dir"):
      seed_sweep.sweep(tiny, "ppl", memory=SEED1, seeds=2, text="text " * 50, window=8, **kw)


def _state(cfg, model):
  return cfg.fresh_state(model.config, jax.random.key(0))


def test_generate_refuses_a_state_for_another_config_or_model(tiny):
  k4 = _state(dataclasses.replace(SEED1, num_attractors=4), tiny)
  with pytest.raises(InputError, match=r"shape \(1, 4, 16\).*\(1, 8, 16\)"):
    aj.generate(tiny, PROMPT, 4, memory=SEED1, state=k4)
  wide = _state(SEED1, random_model(width=32))
  with pytest.raises(InputError, match=r"shape \(1, 8, 32\).*\(1, 8, 16\)"):
    aj.generate(tiny, PROMPT, 4, memory=SEED1, state=wide)
  assert presets["off"] is None
  with pytest.raises(InputError, match="'off'"):
    aj.generate(tiny, PROMPT, 4, memory=presets["off"], state=_state(SEED1, tiny))
  with pytest.raises(InputError, match="AttractorState, but memory 'hopfield' needs"):
    aj.generate(tiny, PROMPT, 4, memory=dataclasses.replace(presets["hopfield"], layer=1),
                state=_state(SEED1, tiny))


@pytest.mark.parametrize("field", ["vectors", "strength", "feedback"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_generate_refuses_a_non_finite_state(tiny, field, value):
  state = _state(SEED1, tiny)
  leaf = np.array(getattr(state, field))
  leaf.flat[leaf.size // 2] = value
  with pytest.raises(InputError, match=f"state.{field} has NaN or Inf"):
    aj.generate(tiny, PROMPT, 4, memory=SEED1, state=state.replace(**{field: leaf}))


# ---- every AttractorConfig field out of range (preset off is None: no config to check) ----

CONFIG_CASES = {
    "layer": -1, "num_attractors": 4097, "pool": "first", "beta": math.inf, "theta_act": 1.5,
    "timescales": (), "decay": "never", "eps_active": -0.1, "reseed_dead": "yes", "s_dead": 1.5,
    "dead_after": -1, "gate": "always", "theta_gate": -2.0, "tau_gate": 0.0,
    "burn_in_steps": -1, "burn_in_strength": 1.5, "alpha": -0.1, "init": "ones",
    "init_noise": -1.0, "init_strength": 2.0, "center": "no", "loop": "half",
    "feedback_ratio": -0.1,
}


def test_every_config_field_has_a_case():
  fields = {f.name for f in dataclasses.fields(AttractorConfig)}
  assert set(CONFIG_CASES) == fields and "enabled" not in fields


@pytest.mark.parametrize("field", sorted(CONFIG_CASES))
def test_config_refuses_each_field_out_of_range(field):
  value = CONFIG_CASES[field]
  with pytest.raises(InputError, match=re.escape(f"{field}={value!r}")):
    AttractorConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("eta", 1.5), ("gamma", -0.5), ("lam", math.nan)])
def test_timescale_refuses_each_field_out_of_range(field, value):
  with pytest.raises(InputError, match=f"timescale.{field}={value!r}"):
    Timescale(**{field: value})


# ---- the old off switch ----

def test_enabled_is_no_longer_a_config_field():
  with pytest.raises(TypeError, match="enabled"):
    AttractorConfig(enabled=False)


def test_a_memory_must_be_a_memory_config(tiny):
  with pytest.raises(InputError, match="memory='seed': pass a memory config"):
    aj.generate(tiny, PROMPT, 4, memory="seed")
