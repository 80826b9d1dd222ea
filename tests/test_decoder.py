"""The decoder on tiny random configs: cached decoding equals the full pass; the host tap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attractor_jax.transformer import Decoder, KVCache, abstract_params, init_cache
from tiny_models import random_model

B, T, N_PREFILL = 2, 12, 5

# Random models (weights N(0, 0.1^2); norm scales 1 + noise and biases noise, so none is a
# no-op), as overrides of tiny_models.CONFIG.
SMALL = dict(vocab_size=97, width=32, num_heads=4, head_dim=8, max_len=64, scale=0.1)
MODELS = {
    "llama_kv1": dict(SMALL, num_kv_heads=1, mlp_width=48, tie_embeddings=False,
                      rope_theta=12_345.0),
    "llama_kv2": dict(SMALL, num_kv_heads=2, mlp_width=48, tie_embeddings=True),
    "gpt2": dict(SMALL, family="gpt2", num_kv_heads=4, mlp_width=128, norm_eps=1e-5,
                 tie_embeddings=True, attention_bias=True, mlp_bias=True),
}


@functools.lru_cache(maxsize=None)
def _model(name: str):
  return random_model(0, **MODELS[name])


@functools.partial(jax.jit, static_argnames=("decoder",))
def _apply(params, tokens_BxT, positions_BxT, cache, *, decoder):
  return decoder.apply({"params": params}, tokens_BxT, positions_BxT, cache)


def _positions(start, stop):
  return jnp.broadcast_to(jnp.arange(start, stop), (B, stop - start))


def _tokens(seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 97, size=(B, T)), jnp.int32)


@pytest.mark.parametrize("name", list(MODELS))
def test_init_makes_the_tree_the_loaders_check(name):
  """`Decoder.init`: the tree `abstract_params` gives (what converted weights are checked
  against), N(0, 0.02) weights, unit scales, zero biases, a tied head the table's transpose;
  and it runs."""
  cfg = _model(name).config
  tokens, positions = jnp.asarray([[5, 1, 7]], jnp.int32), jnp.arange(3)[None]
  params = Decoder(cfg).init(jax.random.key(0), tokens, positions)["params"]
  assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), abstract_params(cfg))
  for path, a in jax.tree_util.tree_leaves_with_path(params):
    where = jax.tree_util.keystr(path)
    if "scale" in where or "bias" in where:
      np.testing.assert_array_equal(a, float("scale" in where), err_msg=where)
    else:
      assert 0.015 < float(jnp.std(a)) < 0.025, where
  head, table = params["lm_head"]["kernel"], params["embed"]["embedding"]
  assert np.array_equal(head, table.T) == cfg.tie_embeddings
  logits, _ = Decoder(cfg).apply({"params": params}, tokens, positions)
  assert logits.shape == (1, 3, cfg.vocab_size) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("extra_slots,fill", [(0, "zeros"), (9, "garbage")])
def test_prefill_then_decode_matches_full_forward(name, extra_slots, fill):
  model, tokens = _model(name), _tokens()
  cfg, params, decoder = model.config, model.params, model.engine().decoder
  assert cfg.family == MODELS[name].get("family", "llama")
  full, no_cache = _apply(params, tokens, _positions(0, T), None, decoder=decoder)
  assert no_cache is None
  cache = init_cache(cfg, B, T + extra_slots)
  if fill == "garbage":  # slots not yet written must be masked, whatever they hold
    k1, k2 = jax.random.split(jax.random.key(7))
    garbage = lambda key, arrays: tuple(10 * jax.random.normal(jax.random.fold_in(key, i), a.shape)
                                        for i, a in enumerate(arrays))
    cache = KVCache(k=garbage(k1, cache.k), v=garbage(k2, cache.v))
  assert cache.max_len == T + extra_slots

  logits, cache = _apply(params, tokens[:, :N_PREFILL], _positions(0, N_PREFILL), cache,
                         decoder=decoder)
  steps = [logits]
  for t in range(N_PREFILL, T):
    logits, cache = _apply(params, tokens[:, t:t + 1], _positions(t, t + 1), cache,
                           decoder=decoder)
    steps.append(logits)
  got = np.concatenate([np.asarray(s) for s in steps], axis=1)
  assert got.shape == (B, T, cfg.vocab_size)
  np.testing.assert_allclose(got, np.asarray(full), atol=1e-5, rtol=0)
  # ... and the model's public full pass is that same causal pass.
  np.testing.assert_allclose(np.asarray(model.logits(tokens)), np.asarray(full), atol=1e-5,
                             rtol=0)


TAP_MODEL = random_model(3, **dict(SMALL, num_layers=3, num_kv_heads=2, mlp_width=48,
                                    tie_embeddings=False))
TAP_CFG = TAP_MODEL.config


@functools.partial(jax.jit, static_argnames=("host_layer",))
def _tapped(params, tokens_BxT, feedback_BxD, host_layer):
  positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
  return Decoder(TAP_CFG).apply({"params": params}, tokens_BxT, positions, None, feedback_BxD,
                                host_layer, method=Decoder.tapped)


def _tap_params():
  return TAP_MODEL.params


@jax.jit
def _call(params, tokens_BxT):
  positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
  return Decoder(TAP_CFG).apply({"params": params}, tokens_BxT, positions)


def test_tapped_with_zero_feedback_is_call():
  params, tokens = _tap_params(), _tokens(1)
  positions, zeros = _positions(0, T), jnp.zeros((B, TAP_CFG.width))
  decoder = Decoder(TAP_CFG)
  plain, _ = decoder.apply({"params": params}, tokens, positions)
  jit_plain, _ = _call(params, tokens)
  for host_layer in range(TAP_CFG.num_layers):
    logits, cache, taps = decoder.apply({"params": params}, tokens, positions, None, zeros,
                                        host_layer, method=Decoder.tapped)
    assert cache is None
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain))
    assert taps.attn_out.shape == taps.hidden.shape == (B, T, TAP_CFG.width)
    # Under jit the two are different XLA programs (the None feedback is a constant that XLA
    # folds), so fusion may reorder float ops: equal to a few ulps, not bit for bit.
    jit_logits, _, _ = _tapped(params, tokens, zeros, host_layer)
    np.testing.assert_allclose(np.asarray(jit_logits), np.asarray(jit_plain), atol=1e-6, rtol=0)
    # The public read of a pass (no memory) taps the same layer.
    read = TAP_MODEL.taps(tokens, layer=host_layer)
    for got, want in zip(read, (logits, taps.attn_out, taps.hidden)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
  assert TAP_MODEL.taps(tokens).attn_out.shape == (B, T, TAP_CFG.width)  # default: the middle
  np.testing.assert_array_equal(np.asarray(TAP_MODEL.taps(tokens).attn_out),
                                np.asarray(TAP_MODEL.taps(tokens, layer=1).attn_out))


@pytest.mark.parametrize("host_layer", [0, 1, 2])
def test_feedback_changes_logits_but_not_the_host_tap(host_layer):
  params, tokens = _tap_params(), _tokens(2)
  zeros = jnp.zeros((B, TAP_CFG.width))
  feedback = 0.5 * jax.random.normal(jax.random.key(4), (B, TAP_CFG.width))
  base_logits, _, base_taps = _tapped(params, tokens, zeros, host_layer)
  logits, _, taps = _tapped(params, tokens, feedback, host_layer)

  diff_BxT = np.abs(np.asarray(logits) - np.asarray(base_logits)).max(axis=-1)
  assert (diff_BxT > 1e-3).all()  # every position of every row is moved
  assert not np.allclose(np.asarray(taps.hidden), np.asarray(base_taps.hidden))
  # The feedback enters the residual after the host layer's attention: that tap is untouched.
  np.testing.assert_array_equal(np.asarray(taps.attn_out),
                                np.asarray(base_taps.attn_out))


def test_feedback_is_per_row():
  params, tokens = _tap_params(), _tokens(3)
  feedback = jnp.zeros((B, TAP_CFG.width)).at[1].set(1.0)
  base, _, _ = _tapped(params, tokens, jnp.zeros_like(feedback), 1)
  logits, _, _ = _tapped(params, tokens, feedback, 1)
  np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(base[0]), atol=1e-6, rtol=0)
  assert np.abs(np.asarray(logits[1]) - np.asarray(base[1])).max() > 1e-3
