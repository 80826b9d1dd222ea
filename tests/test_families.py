"""The model families against transformers (float32, random tiny HF models): the full pass,
cached decoding past the sliding window, where the host layer's tap and feedback sit, every
memory preset on gemma3 and qwen3, and the options refused by name."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import config as config_lib
from attractor_jax.errors import InputError
from attractor_jax.transformer import Decoder, KVCache, init_cache
from conftest import needs_torch
from tiny_models import family_dir

pytestmark = needs_torch

B, T, N_PREFILL, PROMPT = 2, 18, 3, [5, 17, 42, 3, 60]

# name: (family, overrides of tiny_models.FAMILY_CONFIGS). Windows are 4 or 5 and T = 18, so
# every pass past the prefill reaches beyond twice the window.
MODELS = {
    "qwen2": ("qwen2", {}),  # GQA, tied, q/k/v biases, layers 1-2 local
    "qwen3": ("qwen3", {}),  # MQA, untied, head_dim 12 != width / heads, all four biases
    "mistral": ("mistral", {}),  # GQA, untied, every layer local
    "gemma2": ("gemma2", {}),  # GQA, untied, soft-capping, local / global / local
    "gemma3": ("gemma3", {}),  # MQA and tied (as Gemma 3 270M), local RoPE base 100
    "llama": ("llama", {}),  # MHA, untied, q/k/v/o and MLP biases
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """name -> (the torch model, the same model loaded by aj.load), made once per module."""

  @functools.cache
  def get(name):
    family, overrides = MODELS[name]
    path = tmp_path_factory.mktemp(name)
    hf = family_dir(path, family, **overrides)
    return hf, aj.load(str(path))

  return get


def _hf_logits(hf, tokens_BxT):
  import torch
  with torch.no_grad():
    return hf(torch.tensor(np.asarray(tokens_BxT))).logits.numpy()


def _tokens(seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 97, size=(B, T)), jnp.int32)


def _positions(start, stop):
  return jnp.broadcast_to(jnp.arange(start, stop), (B, stop - start))


@pytest.mark.parametrize("name", MODELS)
def test_full_forward_matches_transformers(models, name):
  hf, model = models(name)
  cfg, tokens = model.config, _tokens()
  assert cfg.family == MODELS[name][0]
  assert cfg.sliding_window is None or T > 2 * cfg.sliding_window
  got, want = np.asarray(model.logits(tokens)), _hf_logits(hf, tokens)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_cached_decode_past_the_window_matches_transformers(models, name):
  """A prefill into a cache with garbage in its spare slots, then one token per pass: each
  pass's logits equal transformers' full pass and ours."""
  hf, model = models(name)
  cfg, tokens = model.config, _tokens(1)
  step = jax.jit(model.engine().step)
  k1, k2 = jax.random.split(jax.random.key(7))
  garbage = lambda key, arrays: tuple(10 * jax.random.normal(jax.random.fold_in(key, i), a.shape)
                                      for i, a in enumerate(arrays))
  cache = init_cache(cfg, B, T + 6)
  cache = KVCache(k=garbage(k1, cache.k), v=garbage(k2, cache.v))
  out = step(model.params, tokens[:, :N_PREFILL], _positions(0, N_PREFILL), cache, None)
  passes = [out.logits]
  for t in range(N_PREFILL, T):
    out = step(model.params, tokens[:, t:t + 1], _positions(t, t + 1), out.cache, None)
    passes.append(out.logits)
  got = np.concatenate([np.asarray(p) for p in passes], axis=1)
  np.testing.assert_allclose(got, _hf_logits(hf, tokens), atol=1e-4, rtol=0)
  np.testing.assert_allclose(got, np.asarray(model.logits(tokens)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "qwen3"])
def test_tap_and_feedback_sit_where_transformers_adds_the_attention(models, name):
  """The host layer's tap is the attention sublayer's output as it enters the residual stream
  (gemma: after its post-attention norm), and feedback joins the stream right there: adding
  it to that output in transformers (a hook) gives our logits."""
  import torch
  hf, model = models(name)
  layer, tokens = 1, _tokens(2)
  feedback_BxD = 0.5 * np.random.default_rng(3).standard_normal((B, model.config.width))
  block = hf.model.layers[layer]
  seen = []

  def add_feedback(module, inputs, out):
    attn = out if torch.is_tensor(out) else out[0]
    seen.append(attn.detach().numpy().copy())
    attn = attn + torch.tensor(feedback_BxD, dtype=attn.dtype)[:, None, :]
    return attn if torch.is_tensor(out) else (attn, *out[1:])

  site = block.post_attention_layernorm if model.config.gemma else block.self_attn
  handle = site.register_forward_hook(add_feedback)
  try:
    want = _hf_logits(hf, tokens)
  finally:
    handle.remove()
  decoder = Decoder(model.config)
  logits, _, taps = jax.jit(functools.partial(decoder.apply, method=Decoder.tapped),
                            static_argnames="host_layer")(
      {"params": model.params}, tokens, _positions(0, T), None,
      jnp.asarray(feedback_BxD, jnp.float32), host_layer=layer)
  np.testing.assert_allclose(np.asarray(taps.attn_out), seen[0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=0)
  assert np.abs(want - _hf_logits(hf, tokens)).max() > 1e-2  # the feedback did move them


def _hf_greedy(hf, prompt, n):
  import torch
  hf.generation_config.eos_token_id = None
  with torch.no_grad():
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
  return out[0, len(prompt):].tolist()


MEMORY_MODELS = ["gemma3", "qwen3"]
PRESETS = [p for p in aj.presets if aj.presets[p] is not None]
PASSES_PxT = np.random.default_rng(4).integers(0, 97, size=(3, 6))


@functools.cache
def _passes(model, memory):
  """Three 6-token passes (no KV cache) from the memory's fresh state: logits [P, T, V] and
  the final state. One compiled pass per memory: a whole generation compiles two bigger
  programs, and compiling dominates these tests."""
  engine = model.engine(memory)
  state = None
  if memory is not None:
    state = engine.fresh_states(model.params, jax.random.key(0)[None],
                                jnp.asarray(PASSES_PxT[0])[None])
  step, logits = jax.jit(engine.step), []
  for tokens_T in PASSES_PxT:
    out = step(model.params, jnp.asarray(tokens_T)[None], jnp.arange(len(tokens_T))[None], None,
               state)
    logits.append(np.asarray(out.logits[0]))
    state = out.memory_state
  return np.stack(logits), state


@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_generation_with_and_without_a_memory(models, name):
  """Greedy tokens equal transformers' (past twice the window); the seed preset generates."""
  hf, model = models(name)
  assert aj.generate(model, PROMPT, 14).tokens == _hf_greedy(hf, PROMPT, 14)
  g = aj.generate(model, PROMPT, 8, memory=dataclasses.replace(aj.presets["seed"], layer=1))
  assert len(g.tokens) == 8 and int(g.state.step) == 8
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g.state))


@pytest.mark.parametrize("name", MEMORY_MODELS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_memory_preset_runs(models, name, preset):
  _, model = models(name)
  logits, state = _passes(model, dataclasses.replace(aj.presets[preset], layer=1))
  assert np.isfinite(logits).all()
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(state))
  assert int(state.step[0]) == len(PASSES_PxT)  # the memory observed every pass


ZERO = {"attractor": dict(alpha=0.0), "cache": dict(lam=0.0), "hopfield": dict(alpha=0.0),
        "steering": dict(alpha=0.0), "fastweights": dict(alpha=0.0),
        "dynamic-eval": dict(lr=0.0)}  # each memory kind's strength at zero


@pytest.mark.parametrize("name", MEMORY_MODELS)
@pytest.mark.parametrize("preset", PRESETS)
def test_zero_strength_is_no_memory(models, name, preset):
  """Every pass's log-probabilities equal the plain model's (the cache memory reads out
  log-probabilities, the others logits): to float rounding, as different XLA programs."""
  _, model = models(name)
  memory = aj.presets[preset]
  memory = dataclasses.replace(memory, layer=1, **ZERO[memory.kind])
  logp = lambda logits: np.asarray(jax.nn.log_softmax(logits, axis=-1))
  got, want = logp(_passes(model, memory)[0]), logp(_passes(model, None)[0])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  assert (got.argmax(-1) == want.argmax(-1)).all()


# ---- configs: from GGUF metadata as from config.json; what is refused, by name ----

GEMMA3_270M = dict(vocab_size=262_144, hidden_size=640, intermediate_size=2048,
                   num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                   head_dim=256, max_position_embeddings=32_768, query_pre_attn_scalar=256,
                   sliding_window=512, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0)


def _gemma3_270m_gguf_metadata():
  """The keys llama.cpp's converter writes for Gemma 3 270M (norm epsilon as float32)."""
  meta = {"embedding_length": 640, "block_count": 18, "feed_forward_length": 2048,
          "context_length": 32_768, "attention.head_count": 4, "attention.head_count_kv": 1,
          "attention.key_length": 256, "attention.value_length": 256,
          "attention.layer_norm_rms_epsilon": float(np.float32(1e-6)),
          "attention.sliding_window": 512, "rope.freq_base": 1_000_000.0}
  return {"general.architecture": "gemma3", "tokenizer.ggml.tokens": ["t"] * 262_144,
          **{f"gemma3.{k}": v for k, v in meta.items()}}


def test_gemma3_from_gguf_metadata_equals_from_config_json():
  import transformers
  from_hf = config_lib.from_hf_config(transformers.Gemma3TextConfig(**GEMMA3_270M))
  from_gguf = config_lib.from_gguf_metadata(_gemma3_270m_gguf_metadata(), has_output_tensor=False)
  assert from_gguf == dataclasses.replace(from_hf, norm_eps=float(np.float32(1e-6)))
  assert from_gguf.sliding_layers == tuple(i for i in range(18) if i % 6 != 5)
  assert (from_gguf.rope_theta, from_gguf.rope_local_theta) == (1e6, 1e4)
  assert from_gguf.query_pre_attn_scalar == 256 and from_gguf.tie_embeddings
  flags = [i % 3 != 2 for i in range(18)]  # a pattern given as one flag per layer
  meta = {**_gemma3_270m_gguf_metadata(), "gemma3.attention.sliding_window_pattern": flags}
  assert config_lib.from_gguf_metadata(meta, False).sliding_layers == tuple(
      i for i, f in enumerate(flags) if f)


def _hf(config_class, **fields):
  import transformers
  base = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4)
  return getattr(transformers, config_class)(**{**base, **fields})


REFUSED_HF = [
    ("Gemma3TextConfig", dict(rope_scaling={"rope_type": "linear", "factor": 8.0}),
     "rope_parameters['full_attention'].rope_type='linear'"),
    ("Gemma3TextConfig", dict(attn_logit_softcapping=50.0), "attn_logit_softcapping=50.0"),
    ("Gemma3TextConfig", dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    ("Gemma2Config", dict(hidden_activation="gelu"), "hidden_activation='gelu'"),
    ("Qwen2Config", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type='yarn'"),
    ("Qwen3Config", dict(layer_types=["full_attention", "chunked_attention"]),
     "layer_types='chunked_attention'"),
    ("MistralConfig", dict(hidden_act="gelu"), "hidden_act='gelu'"),
]


@pytest.mark.parametrize("config_class,fields,named", REFUSED_HF,
                         ids=[f"{c}-{next(iter(f))}" for c, f, _ in REFUSED_HF])
def test_unsupported_options_are_refused_by_name(config_class, fields, named):
  with pytest.raises(InputError, match="unsupported model option") as e:
    config_lib.from_hf_config(_hf(config_class, **fields))
  assert named in str(e.value)


def test_unsupported_model_type_and_gguf_architecture_list_the_supported():
  with pytest.raises(InputError) as e:
    config_lib.from_hf_config(_hf("Qwen2MoeConfig"))
  assert "'qwen2_moe'" in str(e.value) and all(f"'{t}'" in str(e.value)
                                                for t in config_lib.HF_MODEL_TYPES)
  with pytest.raises(InputError) as e:
    config_lib.from_gguf_metadata({"general.architecture": "gemma2"}, has_output_tensor=True)
  assert "'gemma2'" in str(e.value) and "'gemma3'" in str(e.value) and "'qwen3'" in str(e.value)


@pytest.mark.parametrize("key,value,named", [
    ("gemma3.rope.scaling.type", "linear", "gemma3.rope.scaling.type='linear'"),
    ("gemma3.attn_logit_softcapping", 50.0, "gemma3.attn_logit_softcapping=50.0"),
    ("gemma3.attention.value_length", 128, "gemma3.attention.value_length=128"),
    ("gemma3.attention.sliding_window", None, "gemma3.attention.sliding_window is missing"),
])
def test_gguf_metadata_refusals_name_the_key(key, value, named):
  meta = _gemma3_270m_gguf_metadata()
  if value is None:
    del meta[key]
  else:
    meta[key] = value
  with pytest.raises(InputError) as e:
    config_lib.from_gguf_metadata(meta, has_output_tensor=False)
  assert named in str(e.value)


def test_config_refuses_soft_capping_and_windows_a_family_lacks():
  base = dict(vocab_size=97, width=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
              mlp_width=48, max_len=64, norm_eps=1e-6, tie_embeddings=True)
  for fields, named in [(dict(family="gemma3", attn_softcap=50.0), "attn_softcap=50.0"),
                        (dict(family="qwen3", final_softcap=30.0), "final_softcap=30.0"),
                        (dict(family="mistral", sliding_layers=(0,)), "sliding_window=None"),
                        (dict(family="llama", sliding_window=4, sliding_layers=(2,)),
                         "sliding_layers=(2,)"),
                        (dict(family="phi3"), "family='phi3'")]:
    with pytest.raises(InputError, match=re.escape(named)):
      config_lib.ModelConfig(**base, **fields)
