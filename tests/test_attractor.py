"""The attractor update against a plain NumPy reading of docs/method.md, plus invariants and config checks."""

import dataclasses
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attractor_jax import attractor as att
from attractor_jax.attractor import AttractorConfig, Timescale
from attractor_jax.errors import InputError
from attractor_jax.memories import base
from attractor_jax.presets import presets
from tiny_models import CONFIG as MC  # width 16, 2 layers: a shape-only model config
D, K, T = 16, 5, 3
PRESETS = ("seed", "gated", "multiscale")
THREE_BANKS = (Timescale(eta=0.5, gamma=0.5, lam=0.2), Timescale(eta=0.1, gamma=0.1, lam=0.02),
               Timescale(eta=0.02, gamma=0.3, lam=0.3))


def _preset(name, **kw):
  return dataclasses.replace(presets[name], layer=1, **kw)


# --- A plain NumPy reading of docs/method.md "3. One pass" (float64), written from the text. ---

def ref_pool(attn_TxD, how):
  """The pass's x: the last position or the mean over positions."""
  attn_TxD = np.asarray(attn_TxD, np.float64)
  return attn_TxD[-1] if how == "last" else attn_TxD.sum(axis=0) / attn_TxD.shape[0]


def ref_bank(cfg, ts, a, s, idle, x, mean, tokens):
  """Steps 2-10 for one bank (no re-seed); returns (a, s, idle, g * m, active)."""
  a, s, idle = a.copy(), s.copy(), idle.copy()
  # 2. similarity (optionally centered by the running mean of earlier passes)
  xc, ac = (x - mean, a - mean) if cfg.center else (x, a)
  c = np.array([np.dot(xc, ac[k]) / (np.sqrt(np.dot(xc, xc)) * np.sqrt(np.dot(ac[k], ac[k])))
                for k in range(len(a))])
  # 3. competition
  e = np.exp(cfg.beta * (c - c.max()))
  w = e / e.sum()
  act = np.where(c >= cfg.theta_act, w, 0.0)
  # 4. pull toward the (uncentered) input
  for k in range(len(a)):
    a[k] = a[k] + ts.eta * act[k] * (x - a[k])
  # 6 ("all"): decay everything before strengthening
  if cfg.decay == "all":
    s = s * (1.0 - ts.lam)
  # 5. strengthen
  s = s + ts.gamma * act * (1.0 - s)
  # 6 ("unused"): decay those below eps_active
  active = act >= cfg.eps_active
  if cfg.decay == "unused":
    s = np.where(active, s, s * (1.0 - ts.lam))
  # 7. idle counters
  idle = np.where(active, 0, idle + 1)
  # 9. read-out
  m = np.zeros_like(x)
  for k in range(len(a)):
    m = m + w[k] * s[k] * a[k]
  # 10. gate and burn-in
  g = 1.0
  if cfg.gate == "similarity":
    g = 1.0 / (1.0 + math.exp(-(c.max() - cfg.theta_gate) / cfg.tau_gate))
  if tokens < cfg.burn_in_steps or s.max() < cfg.burn_in_strength:  # burn-in counts tokens
    g = 0.0
  return a, s, idle, g * m, active


def ref_update(cfg, st, x, tokens=1):
  """One pass of `tokens` tokens over all banks: feedback = alpha * sum of the banks' gated
  read-outs."""
  step, read = st["step"] + 1, st["tokens"] + tokens
  out = [ref_bank(cfg, ts, st["vectors"][n], st["strength"][n], st["idle"][n], x, st["mean"], read)
         for n, ts in enumerate(cfg.timescales)]
  a, s, idle, gm, active = (np.stack(p) for p in zip(*out))
  mean = st["mean"] + (x - st["mean"]) / step
  return dict(vectors=a, strength=s, idle=idle, step=step, tokens=read,
              feedback=cfg.alpha * gm.sum(axis=0), mean=mean), active


def _to_np(state):
  ints = ("idle", "step", "tokens")
  return {f: np.asarray(getattr(state, f), np.int64 if f in ints else np.float64)
          for f in ("vectors", "strength", "idle", "step", "tokens", "feedback", "mean")}


def _assert_state_close(state, ref, tol=1e-5):
  got = _to_np(state)
  for f in ("vectors", "strength", "feedback", "mean"):
    np.testing.assert_allclose(got[f], ref[f], rtol=tol, atol=tol, err_msg=f)
  np.testing.assert_array_equal(got["idle"], ref["idle"])
  assert int(got["step"]) == ref["step"] and int(got["tokens"]) == ref["tokens"]


def _start(cfg, seed):
  """A state whose first attractors sit near the input direction, with random strengths/idle."""
  rng = np.random.default_rng(seed)
  N = cfg.num_banks
  u = rng.standard_normal(D)
  vec = rng.standard_normal((N, K, D))
  vec[:, :2] = u + 0.2 * rng.standard_normal((N, 2, D))
  st = att.init_state(cfg, MC, jax.random.PRNGKey(seed))
  st = st.replace(vectors=jnp.asarray(vec, jnp.float32),
                  strength=jnp.asarray(rng.uniform(0.2, 0.9, (N, K)), jnp.float32),
                  idle=jnp.asarray(rng.integers(0, 5, (N, K)), jnp.int32))
  xs = u + 0.3 * rng.standard_normal((6, T, D))
  return st, xs.astype(np.float32)


_update = att.update

_GRID = [dict(gate=g, decay=d, pool=p, center=c, burn_in_steps=b, burn_in_strength=0.3 * (b > 0))
         for g, d, p, c, b in itertools.product(("none", "similarity"), ("unused", "all"),
                                                ("last", "mean"), (False, True), (0, 7))]
_GRID.append(dict(timescales=THREE_BANKS, gate="similarity", burn_in_steps=5, center=True))
_GRID.append(dict(timescales=THREE_BANKS, decay="all", pool="mean"))


@pytest.mark.parametrize("kw", _GRID, ids=lambda kw: "-".join(
    f"{v}" if k != "timescales" else "3banks" for k, v in kw.items()))
def test_update_matches_numpy_reference(kw):
  kw = {"timescales": (Timescale(eta=0.3, gamma=0.4, lam=0.25),), **kw}
  cfg = AttractorConfig(layer=1, num_attractors=K, beta=5.0, theta_act=0.4, eps_active=0.05,
                        theta_gate=0.6, tau_gate=0.2, alpha=0.7, **kw)
  st, xs = _start(cfg, seed=len(str(kw)))
  ref = _to_np(st)
  ref["step"], ref["tokens"] = int(ref["step"]), int(ref["tokens"])
  n_active = []
  for attn_TxD in xs:
    x = base.pool(jnp.asarray(attn_TxD), cfg.pool)
    np.testing.assert_allclose(np.asarray(x), ref_pool(attn_TxD, cfg.pool), rtol=1e-6, atol=1e-6)
    st, info = _update(cfg, st, x, tokens=T)  # passes of T tokens: burn-in ends mid-run
    ref, active = ref_update(cfg, ref, ref_pool(attn_TxD, cfg.pool), tokens=T)
    _assert_state_close(st, ref)
    np.testing.assert_array_equal(np.asarray(info.active), active)
    n_active.append(active.sum())
  # the inputs exercise both branches: some attractors active, some not
  assert 0 < sum(n_active) < len(xs) * cfg.num_banks * K


@pytest.mark.parametrize("tokens, silent", [(1, 4), (3, 2), (4, 1)])
def test_burn_in_gives_zero_feedback_until_b_tokens_are_read(tokens, silent):
  """Burn-in 4 counts tokens: one-token passes give the first 4 passes zero feedback;
  3-token passes the first 2 (the second update has read 6 tokens); 4-token passes only the
  first, which starts from the zero feedback."""
  cfg = AttractorConfig(layer=1, num_attractors=K, burn_in_steps=4, theta_act=-1.0, eps_active=0.0)
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0))
  received = []
  for x in np.random.default_rng(0).standard_normal((6, D)).astype(np.float32):
    received.append(float(jnp.linalg.norm(st.feedback)))  # what this pass adds
    st, _ = _update(cfg, st, jnp.asarray(x), tokens=tokens)
  assert received[:silent] == [0.0] * silent and all(r > 0 for r in received[silent:])
  assert int(st.tokens) == 6 * tokens and int(st.step) == 6


def test_burn_in_strength_holds_the_gate_until_an_attractor_is_strong():
  # beta=0: w = 1/K = 0.2 for all, every attractor active; s_n = 1 - 0.92**n crosses 0.5 at n=9
  cfg = AttractorConfig(layer=1, num_attractors=K, beta=0.0, theta_act=-1.0, eps_active=0.0,
                        burn_in_strength=0.5, timescales=(Timescale(gamma=0.4, lam=0.0),))
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0))
  ref = _to_np(st)
  ref["step"] = ref["tokens"] = 0
  norms = []
  for x in np.random.default_rng(1).standard_normal((10, D)).astype(np.float32):
    st, _ = _update(cfg, st, jnp.asarray(x))
    ref, _ = ref_update(cfg, ref, x.astype(np.float64))
    _assert_state_close(st, ref)
    norms.append(float(jnp.linalg.norm(st.feedback)))
  assert norms[:8] == [0.0] * 8 and all(n > 0 for n in norms[8:])


def test_reseed_redraws_inactive_attractors_and_resets_idle():
  cfg = AttractorConfig(layer=1, num_attractors=K, beta=5.0, theta_act=0.4, reseed_dead=True,
                        s_dead=1.0, dead_after=0, alpha=1.0,
                        timescales=(Timescale(eta=0.3, gamma=0.4, lam=0.25),))
  st, xs = _start(cfg, seed=7)
  x = xs[0, -1]
  new, info = _update(cfg, st, jnp.asarray(x))
  ref, active = ref_update(dataclasses.replace(cfg, reseed_dead=False), _to_np(st), x.astype(np.float64))
  active = active[0]
  assert active.any() and not active.all()
  vec = np.asarray(new.vectors[0])
  np.testing.assert_allclose(vec[active], ref["vectors"][0][active], rtol=1e-5, atol=1e-5)
  # inactive ones: redrawn (differ from both the old and the pulled vector), idle 0
  assert np.all(np.abs(vec[~active] - ref["vectors"][0][~active]).max(axis=-1) > 1e-3)
  assert np.all(np.abs(vec[~active] - np.asarray(st.vectors[0])[~active]).max(axis=-1) > 1e-3)
  np.testing.assert_array_equal(np.asarray(new.idle[0]), 0)
  np.testing.assert_allclose(np.asarray(new.strength), ref["strength"], rtol=1e-5, atol=1e-6)
  # the read-out uses the redrawn vectors
  xc, a = x.astype(np.float64), np.asarray(st.vectors[0], np.float64)
  c = a @ xc / (np.linalg.norm(a, axis=-1) * np.linalg.norm(xc))
  w = np.exp(cfg.beta * (c - c.max()))
  w /= w.sum()
  m = (w * ref["strength"][0]) @ vec.astype(np.float64)
  np.testing.assert_allclose(np.asarray(new.feedback), cfg.alpha * m, rtol=1e-5, atol=1e-5)


def test_pool_on_random_positions():
  attn = jax.random.normal(jax.random.PRNGKey(3), (7, D))
  np.testing.assert_array_equal(np.asarray(base.pool(attn, "last")), np.asarray(attn[-1]))
  np.testing.assert_allclose(np.asarray(base.pool(attn, "mean")), ref_pool(attn, "mean"),
                             rtol=1e-6, atol=1e-6)


def _scan(cfg, state, xs):
  def body(st, x):
    st, info = att.update(cfg, st, x)
    return st, (st.feedback, st.strength, info.gate)
  return jax.lax.scan(body, state, xs)


def test_alpha_zero_is_inert():
  cfg = _preset("gated", alpha=0.0, burn_in_steps=0, burn_in_strength=0.0, init_strength=0.5)
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0))
  xs = jax.random.normal(jax.random.PRNGKey(1), (300, D))
  final, (fb, s, gate) = jax.jit(_scan, static_argnums=0)(cfg, st, xs)
  assert np.all(np.asarray(fb) == 0.0) and np.all(np.asarray(final.feedback) == 0.0)
  assert np.asarray(gate).max() > 0  # the gate was open: alpha alone silenced it


@pytest.mark.parametrize("decay", ["unused", "all"])
def test_lambda_one_is_stateless(decay):
  cfg = AttractorConfig(layer=1, num_attractors=K, beta=5.0, theta_act=0.4, decay=decay,
                        timescales=(Timescale(eta=0.3, gamma=0.4, lam=1.0),))
  st, xs = _start(cfg, seed=11)
  new, info = _update(cfg, st, jnp.asarray(xs[0, -1]))
  active, s = np.asarray(info.active), np.asarray(new.strength)
  assert active.any() and not active.all()
  assert np.all(s[~active] == 0.0)
  if decay == "all":  # nothing of the old strength survives: another start gives the same s
    other, _ = _update(cfg, st.replace(strength=1.0 - st.strength), jnp.asarray(xs[0, -1]))
    np.testing.assert_allclose(np.asarray(other.strength), s, rtol=1e-6, atol=1e-7)
    assert np.all(s[active] > 0)


@pytest.mark.parametrize("name,reseed", [("seed", False), ("gated", True), ("multiscale", False)])
def test_long_run_stays_finite_and_bounded(name, reseed):
  cfg = _preset(name, reseed_dead=reseed, dead_after=4, s_dead=0.05)
  k_x, k_s, k_z = jax.random.split(jax.random.PRNGKey(5), 3)
  n = 10_000
  scale = 10.0 ** jax.random.uniform(k_s, (n, 1), minval=-4.0, maxval=4.0)
  xs = jax.random.normal(k_x, (n, D)) * scale
  xs = jnp.where(jax.random.bernoulli(k_z, 0.01, (n, 1)), 0.0, xs)  # some all-zero inputs
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0))
  final, (fb, s, gate) = jax.jit(_scan, static_argnums=0)(cfg, st, xs)
  chex.assert_tree_all_finite((final, fb, s, gate))
  s = np.asarray(s)
  assert s.min() >= 0.0 and s.max() <= 1.0
  assert int(final.step) == n


def test_vmap_over_seeds_equals_a_loop():
  cfg = _preset("gated", reseed_dead=True, dead_after=3, s_dead=0.05, burn_in_steps=5)
  xs = jax.random.normal(jax.random.PRNGKey(9), (50, D))

  def run(key):
    final, (fb, s, _) = _scan(cfg, att.init_state(cfg, MC, key), xs)
    return final, fb, s

  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  run_jit = jax.jit(run)
  batched = jax.jit(jax.vmap(run))(keys)
  looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[run_jit(k) for k in keys])
  chex.assert_trees_all_close(batched, looped, rtol=1e-5, atol=1e-6)
  chex.assert_tree_shape_prefix(batched, (4,))
  # seeds differ
  assert not np.allclose(np.asarray(batched[0].vectors[0]), np.asarray(batched[0].vectors[1]))


@pytest.mark.parametrize("name", PRESETS)
def test_init_state_shapes(name):
  cfg = _preset(name)
  N, Kc = cfg.num_banks, cfg.num_attractors
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0))
  chex.assert_shape(st.vectors, (N, Kc, D))
  chex.assert_shape((st.strength, st.idle), (N, Kc))
  chex.assert_shape((st.step, st.sigma), ())
  chex.assert_shape((st.feedback, st.mean), (D,))
  chex.assert_type((st.idle, st.step), jnp.int32)
  chex.assert_type((st.vectors, st.strength, st.feedback), jnp.float32)
  chex.assert_tree_all_finite(st)
  assert np.all(np.asarray(st.feedback) == 0) and int(st.step) == 0
  np.testing.assert_allclose(np.asarray(st.strength), cfg.init_strength)
  np.testing.assert_allclose(float(st.sigma), cfg.init_noise)

  prompt = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (10, D))
  rms = float(jnp.sqrt(jnp.mean(prompt**2)))
  st = att.init_state(dataclasses.replace(cfg, init="prompt"), MC, jax.random.PRNGKey(0), prompt)
  chex.assert_shape(st.vectors, (N, Kc, D))
  chex.assert_tree_all_finite(st)
  np.testing.assert_allclose(float(st.sigma), rms, rtol=1e-5)
  # each attractor is a prompt row plus small noise
  dist = np.linalg.norm(np.asarray(st.vectors)[:, :, None] - np.asarray(prompt)[None, None], axis=-1)
  assert dist.min(axis=-1).max() < 0.1 * rms * math.sqrt(D) * 2
  # noise init with a prompt: sigma is the prompt's RMS
  st = att.init_state(cfg, MC, jax.random.PRNGKey(0), prompt)
  np.testing.assert_allclose(float(st.sigma), rms, rtol=1e-5)
  with pytest.raises(InputError, match="prompt"):
    att.init_state(dataclasses.replace(cfg, init="prompt"), MC, jax.random.PRNGKey(0))


@pytest.mark.parametrize("bad,field", [
    (dict(num_attractors=-1), "num_attractors"),
    (dict(num_attractors=0), "num_attractors"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(gate="cosine"), "gate"),
    (dict(pool="max"), "pool"),
    (dict(init="zeros"), "init"),
    (dict(decay="some"), "decay"),
    (dict(beta=-1.0), "beta"),
])
def test_config_rejects_bad_values(bad, field):
  with pytest.raises(InputError, match=field) as e:
    AttractorConfig(**bad)
  assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("lam", [1.5, -0.1])
def test_timescale_rejects_lambda_outside_unit_interval(lam):
  with pytest.raises(InputError, match="lam"):
    AttractorConfig(timescales=(Timescale(lam=lam),))


def test_check_model_rejects_missing_layer():
  with pytest.raises(InputError, match="layer"):
    AttractorConfig(layer=2).check_model(MC)
  with pytest.raises(InputError, match="layer"):
    att.init_state(AttractorConfig(layer=5), MC, jax.random.PRNGKey(0))
  AttractorConfig(layer=1).check_model(MC)


def test_configs_are_hashable_and_equal_when_equal():
  a = AttractorConfig(layer=1, timescales=(Timescale(eta=0.2),))
  b = AttractorConfig(layer=1, timescales=(Timescale(eta=0.2),))
  assert a == b and hash(a) == hash(b)
  assert a != dataclasses.replace(a, alpha=0.2)
  assert len({a, b, _preset("multiscale")}) == 2


def test_list_timescales_still_give_a_hashable_config():
  hash(AttractorConfig(timescales=[Timescale()]))
