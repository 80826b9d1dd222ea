"""The five related-work memories (cache, Hopfield, steering, fast weights, dynamic evaluation):
NumPy transcriptions of their formulas, inertness at zero strength on a real tiny decoder, the
cache's causality, config validation, Orbax round trips, and the Memory base class (default
feedback, the KINDS registry)."""

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import checkpoint
from attractor_jax.errors import InputError
from attractor_jax.memories.base import KINDS, Info, Memory, Observation
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.dynamic_eval import DynamicEvalConfig
from attractor_jax.memories.fastweights import FastWeightsConfig
from attractor_jax.memories.hopfield import HopfieldConfig
from attractor_jax.memories.steering import SteeringConfig
from attractor_jax.presets import presets
from attractor_jax.transformer import init_cache
from tiny_models import CONFIG, random_model

D, V = 16, 23
MCFG = dataclasses.replace(CONFIG, vocab_size=V)  # width 16: the shapes of the random passes
SIZES = (5, 1, 1, 3, 1, 1, 1, 1)  # tokens per pass: a prompt, single tokens, one more burst
PROMPT = [5, 17, 33, 2, 60, 8, 41]
TEXT = "the quick brown fox jumps over the lazy dog; " * 2  # 90 byte tokens: 3 windows of 24

# Small configs driven through the random passes (layer 0: no model needed).
CACHE_SMALL = CacheConfig(layer=0, window=4, theta=3.0, lam=0.3)  # the FIFO evicts
CACHE_LARGE = CacheConfig(layer=0, window=64, theta=3.0, lam=0.3)  # never full
HOPFIELD_LAST = HopfieldConfig(layer=0, window=3, beta=None, alpha=0.7, pool="last")
HOPFIELD_MEAN = HopfieldConfig(layer=0, window=64, beta=0.5, alpha=0.3, pool="mean")
FAST_LAST = FastWeightsConfig(layer=0, lam=0.8, eta=0.3, alpha=0.5, pool="last")
FAST_MEAN = FastWeightsConfig(layer=0, lam=0.5, eta=0.9, alpha=2.0, pool="mean")
DYNAMIC = DynamicEvalConfig(layer=0, lr=0.5)
ONE_OF_EACH = [CACHE_SMALL, HOPFIELD_LAST, SteeringConfig(layer=0, burn_in=3, alpha=0.4),
               FAST_LAST, DYNAMIC]


# Random passes and a driver for the JAX memories.

def random_passes(seed: int, sizes=SIZES) -> list[Observation]:
  """One sequence's passes: consecutive positions, tokens from a few ids (so they repeat)."""
  rng = np.random.default_rng(seed)
  out, start = [], 0
  for T in sizes:
    f32 = lambda *shape, s=1.0: jnp.asarray(s * rng.standard_normal(shape), jnp.float32)
    out.append(Observation(tokens=jnp.asarray(rng.integers(0, 6, T), jnp.int32),
                           positions=jnp.arange(start, start + T, dtype=jnp.int32),
                           attn_out=f32(T, D), residual=f32(T, D, s=4.0), hidden=f32(T, D),
                           logits=f32(T, V, s=2.0)))
    start += T
  return out


@functools.lru_cache(maxsize=None)
def jitted(cfg):
  return jax.jit(cfg.read), jax.jit(cfg.observe)


def drive(cfg, passes, params=None, seed: int = 0):
  """Runs the memory over the passes. Returns, per pass: (feedback before the pass, read
  logits, feedback after it, info), and the final state."""
  read, observe = jitted(cfg)
  state = cfg.fresh_state(MCFG, jax.random.key(seed))
  rows = []
  for obs in passes:
    before = cfg.feedback(state)
    logits = read(state, obs, params)
    state, info = observe(state, obs, params)
    rows.append((before, np.asarray(logits, np.float64), cfg.feedback(state), info))
  return rows, state


def f64(x) -> np.ndarray:
  return np.asarray(x, np.float64)


def softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


def close(got, want, what=""):
  np.testing.assert_allclose(f64(got), want, rtol=1e-5, atol=1e-5, err_msg=what)


def check_feedback_rows(cfg, passes, want_after):
  """Feedback memories: the logits pass through, the feedback before pass k is the reference's
  after pass k-1 (zero at first), and the info reports its norm."""
  rows, state = drive(cfg, passes)
  want_before = [np.zeros(D)] + want_after[:-1]
  for k, ((before, logits, after, info), obs) in enumerate(zip(rows, passes)):
    np.testing.assert_array_equal(logits, f64(obs.logits), err_msg=f"read, pass {k}")
    close(before, want_before[k], f"feedback before pass {k}")
    close(after, want_after[k], f"feedback after pass {k}")
    close(info.feedback_norm, np.linalg.norm(want_after[k]), f"feedback_norm, pass {k}")
  assert int(state.step) == len(passes)
  return state


def pairs_of(pending, obs):
  """NumPy: the (hidden state, next token, position of next token) pairs a pass completes."""
  hid, toks, pos = f64(obs.hidden), np.asarray(obs.tokens), np.asarray(obs.positions)
  keys = [pending] + list(hid[:-1])
  return [(k, int(toks[j]), int(pos[j])) for j, k in enumerate(keys) if k is not None]


# 1. The formulas, transcribed in NumPy (float64).

def ref_cache(cfg, passes):
  """Per pass, log p with p = (1 - lam) p_model + lam p_cache, p_cache(w) proportional to
  sum_i [x_{i+1} = w] exp(theta cos(h_t, h_i)) over the last `window` pairs completed at or
  before position t; p = p_model while there is none."""
  done, pending, out = [], None, []
  for obs in passes:
    hid, logits, pos = f64(obs.hidden), f64(obs.logits), np.asarray(obs.positions)
    new = pairs_of(pending, obs)
    logp = np.zeros((len(pos), V))
    for t in range(len(pos)):
      visible = (done + [p for p in new if p[2] <= pos[t]])[-cfg.window:]
      p = softmax(logits[t])
      if visible:
        cos = [k @ hid[t] / (np.linalg.norm(k) * np.linalg.norm(hid[t])) for k, _, _ in visible]
        w = softmax(cfg.theta * np.array(cos))
        p_cache = np.zeros(V)
        for wi, (_, nxt, _) in zip(w, visible):
          p_cache[nxt] += wi
        p = (1 - cfg.lam) * p + cfg.lam * p_cache
      logp[t] = np.log(p)
    done += new
    pending = hid[-1]
    out.append(logp)
  return out


def pool(cfg, obs):
  a = f64(obs.attn_out)
  return a[-1] if cfg.pool == "last" else a.mean(axis=0)


def ref_hopfield(cfg, passes):
  """Feedback after each pass: alpha X softmax(beta X^T x) over the patterns stored before it
  (the last `window`), zero while there is none; beta defaults to 1/sqrt(D)."""
  beta = cfg.beta if cfg.beta is not None else 1 / np.sqrt(D)
  stored, out = [], []
  for obs in passes:
    x = pool(cfg, obs)
    X = stored[-cfg.window:]
    fb = np.zeros(D)
    if X:
      w = softmax(beta * np.array([p @ x for p in X]))
      fb = cfg.alpha * sum(wi * p for wi, p in zip(w, X))
    out.append(fb)
    stored.append(x)
  return out


def ref_steering(cfg, passes):
  """Feedback after each pass: zero until `burn_in` tokens are seen (across passes), then
  alpha times the mean attention output of the first `burn_in` tokens."""
  total, count, out = np.zeros(D), 0, []
  for obs in passes:
    for a in f64(obs.attn_out):
      if count < cfg.burn_in:
        total, count = total + a, count + 1
    out.append(cfg.alpha * total / count if count >= cfg.burn_in else np.zeros(D))
  return out


def ref_fastweights(cfg, passes):
  """A <- lam A + eta u u^T, u = x / |x|; feedback alpha A x. Returns feedbacks and A's."""
  A, fbs, As = np.zeros((D, D)), [], []
  for obs in passes:
    x = pool(cfg, obs)
    u = x / np.linalg.norm(x)
    A = cfg.lam * A + cfg.eta * np.outer(u, u)
    fbs.append(cfg.alpha * A @ x)
    As.append(A)
  return fbs, As


def ref_dynamic_eval(cfg, passes, W_DxV):
  """Read: logits + (h * gain) W + bias. Then one SGD step on the mean cross-entropy of the
  pass's pairs under logits = (h * (1 + gain)) W + bias, with the hand-derived gradient
  d/dz = softmax(z) - onehot. Returns the read logits per pass and the final (gain, bias)."""
  gain, bias, pending, reads = np.zeros(D), np.zeros(V), None, []
  for obs in passes:
    hid = f64(obs.hidden)
    reads.append(f64(obs.logits) + (hid * gain) @ W_DxV + bias)
    pairs = pairs_of(pending, obs)
    g_gain, g_bias = np.zeros(D), np.zeros(V)
    for k, nxt, _ in pairs:
      r = softmax((k * (1 + gain)) @ W_DxV + bias)
      r[nxt] -= 1
      r /= len(pairs)
      g_bias += r
      g_gain += k * (W_DxV @ r)
    gain, bias = gain - cfg.lr * g_gain, bias - cfg.lr * g_bias
    pending = hid[-1]
  return reads, gain, bias


@pytest.mark.parametrize("cfg", [CACHE_LARGE, CACHE_SMALL], ids=["window64", "window4"])
def test_cache_matches_numpy(cfg):
  """The cache's log-probs match the NumPy formula over a burst and single-token passes."""
  passes = random_passes(1)
  rows, state = drive(cfg, passes)
  for k, ((before, logp, after, info), want) in enumerate(zip(rows, ref_cache(cfg, passes))):
    assert before is None and after is None
    close(logp, want, f"pass {k}")
    assert float(info.feedback_norm) == 0.0
  assert int(state.filled.sum()) == min(cfg.window, sum(SIZES) - 1)


@pytest.mark.parametrize("cfg", [HOPFIELD_LAST, HOPFIELD_MEAN], ids=["last-window3", "mean"])
def test_hopfield_matches_numpy(cfg):
  """The Hopfield feedback is alpha X softmax(beta X^T x) over the earlier patterns."""
  passes = random_passes(2)
  state = check_feedback_rows(cfg, passes, ref_hopfield(cfg, passes))
  assert int(state.filled.sum()) == min(cfg.window, len(SIZES))


@pytest.mark.parametrize("burn_in", [3, 8, 100])  # within the first pass, straddling, never
def test_steering_matches_numpy(burn_in):
  """The steering vector is alpha times the mean of the first burn_in tokens, then fixed."""
  cfg = SteeringConfig(layer=0, burn_in=burn_in, alpha=0.4)
  passes = random_passes(3)
  want = ref_steering(cfg, passes)
  state = check_feedback_rows(cfg, passes, want)
  assert int(state.count) == min(burn_in, sum(SIZES))
  if burn_in <= sum(SIZES):
    assert np.linalg.norm(want[-1]) > 0


@pytest.mark.parametrize("cfg", [FAST_LAST, FAST_MEAN], ids=["last", "mean"])
def test_fastweights_matches_numpy(cfg):
  """Fast weights: A <- lam A + eta u u^T, u = x / |x|, and feedback alpha A x."""
  passes = random_passes(4)
  fbs, As = ref_fastweights(cfg, passes)
  state = check_feedback_rows(cfg, passes, fbs)
  close(state.A, As[-1], "A")


def test_dynamic_eval_matches_numpy():
  """Dynamic evaluation's reads and SGD steps match a hand-derived gradient."""
  rng = np.random.default_rng(5)
  W = 0.5 * rng.standard_normal((D, V))
  params = {"lm_head": {"kernel": jnp.asarray(W, jnp.float32)}}
  W = f64(jnp.asarray(W, jnp.float32))  # the float32 weights the JAX side sees
  passes = random_passes(5)
  rows, state = drive(DYNAMIC, passes, params)
  reads, gain, bias = ref_dynamic_eval(DYNAMIC, passes, W)
  for k, ((before, logits, after, _), want) in enumerate(zip(rows, reads)):
    assert before is None and after is None
    close(logits, want, f"read, pass {k}")
  close(state.gain, gain, "gain")
  close(state.bias, bias, "bias")
  assert np.linalg.norm(gain) > 1e-2 and np.linalg.norm(bias) > 1e-2  # it did learn


# 2. Zero strength is exactly the baseline, on a real tiny decoder.

ZERO = {
    "cache": dict(lam=0.0), "hopfield": dict(alpha=0.0), "steering": dict(alpha=0.0),
    "fastweights": dict(alpha=0.0), "dynamic-eval": dict(lr=0.0)}


@pytest.fixture(scope="module")
def tiny():
  return random_model(0, tokenizer=True)  # width 16, 2 layers, vocab 64, tied, byte tokenizer


@pytest.fixture(scope="module")
def baseline(tiny):
  g = aj.generate(tiny, PROMPT, 24, memory=presets["off"])
  assert presets["off"] is None and g.memory is None and g.state is None and g.summary() is None
  return g.tokens


@pytest.mark.parametrize("name", list(ZERO))
def test_zero_strength_is_inert(tiny, baseline, name):
  """At zero strength each memory generates the baseline's tokens and scores its NLL."""
  cfg = dataclasses.replace(presets[name], layer=1, **ZERO[name])
  g = aj.generate(tiny, PROMPT, 24, memory=cfg)
  assert g.tokens == baseline
  assert int(g.state.step) == 24  # the memory ran: the prompt pass and 23 decode passes
  fresh = cfg.fresh_state(tiny.config, jax.random.key(0))
  moved = [not np.array_equal(a, b)
           for a, b in zip(jax.tree.leaves(g.state), jax.tree.leaves(fresh))
           if jnp.issubdtype(a.dtype, jnp.floating)]
  assert any(moved)  # and its state learned from the passes
  out = aj.perplexity(tiny, TEXT, window=24, memory=cfg)
  assert out.windows == 3 and out.seeds == 1
  np.testing.assert_allclose(out.window_nll, out.window_nll_baseline, rtol=1e-5)


@pytest.mark.parametrize("cfg", [CacheConfig(layer=1, lam=0.5),
                                 FastWeightsConfig(layer=1, alpha=2.0)], ids=lambda c: c.kind)
def test_nonzero_strength_changes_nll(tiny, cfg):
  """The control for the test above: at nonzero strength the scored NLL moves off the
  baseline by far more than its tolerance (a mixing memory and a feedback memory)."""
  out = aj.perplexity(tiny, TEXT, window=24, memory=cfg)
  diff = np.abs(np.subtract(out.window_nll, out.window_nll_baseline))
  assert diff.max() > 1e-2 * np.abs(out.window_nll_baseline).max()


@pytest.mark.parametrize("burn_in, share", [(0, 1.0), (24, 49 / 72), (10_000, 0.0)])
def test_perplexity_records_how_often_the_gate_was_open(tiny, burn_in, share):
  """Read token by token (three 24-token windows, 72 passes), a burn-in of 24 tokens holds the
  gate shut while fewer than 24 tokens have been read: the first 23 passes (theta_gate -1: the
  similarity gate never holds it). The cache has no gate to record."""
  gated = dataclasses.replace(presets["gated"], layer=1, theta_gate=-1.0, burn_in_steps=burn_in,
                              burn_in_strength=0.0)
  out = aj.perplexity(tiny, TEXT, window=24, memory=gated, seeds=2)
  assert out.windows == 3 and out.to_json()["gate_open"] == pytest.approx(share, abs=1e-6)
  assert aj.perplexity(tiny, TEXT, window=24, memory=CacheConfig(layer=1)).activity is None


# 3. The cache is causal within a pass.

@pytest.mark.parametrize("window", [64, 4])
def test_cache_burst_equals_token_by_token(tiny, window):
  """A 5-token pass's cache log-probs equal those of the same tokens fed one pass at a time,
  after a 6-token prompt (with window 4 the FIFO is already full when the burst comes)."""
  cfg = CacheConfig(layer=1, window=window, theta=5.0, lam=0.5)
  fn = jax.jit(tiny.engine(cfg).step)
  state = jax.tree.map(lambda a: a[None], cfg.fresh_state(tiny.config, jax.random.key(0)))
  kv = init_cache(tiny.config, 1, 16)
  ids = jnp.asarray([3, 9, 3, 14, 9, 3, 9, 14, 3, 27, 9], jnp.int32)
  _, kv, state, *_ = fn(tiny.params, ids[None, :6], jnp.arange(6)[None], kv, state)
  assert int(state.filled.sum()) == min(window, 5)
  burst = fn(tiny.params, ids[None, 6:], jnp.arange(6, 11)[None], kv, state).logits
  single = []
  for t in range(6, 11):
    logits, kv, state, *_ = fn(tiny.params, ids[None, t:t + 1], jnp.full((1, 1), t), kv, state)
    single.append(logits[0, 0])
  np.testing.assert_allclose(np.asarray(burst[0]), np.stack(single), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [presets["off"], dataclasses.replace(presets["seed"], layer=1),
                                 *[dataclasses.replace(c, layer=1) for c in ONE_OF_EACH]],
                         ids=lambda c: "off" if c is None else c.kind)
def test_last_logits_only_is_the_last_row_of_a_full_step(tiny, cfg):
  """`last_logits_only` (segment reads that need only the next token) gives the full pass's
  last logits row, cache, state and info: memories that use logits still see every row."""
  state = None if cfg is None else jax.tree.map(
      lambda a: a[None], cfg.fresh_state(tiny.config, jax.random.key(1), jnp.ones((3, 16))))
  ids, pos = jnp.asarray([PROMPT]), jnp.arange(len(PROMPT))[None]
  run = lambda last: tiny.engine(cfg).step(tiny.params, ids, pos, init_cache(tiny.config, 1, 16),
                                           state, last_logits_only=last)
  full, last = run(False), run(True)
  assert last.logits.shape == (1, 1, tiny.config.vocab_size)
  assert full.logits.shape == (1, len(PROMPT), tiny.config.vocab_size)
  np.testing.assert_allclose(np.asarray(last.logits[:, 0]), np.asarray(full.logits[:, -1]),
                             rtol=1e-6, atol=1e-6)
  assert jax.tree.structure(last[1:4]) == jax.tree.structure(full[1:4])
  for a, b in zip(jax.tree.leaves(last[1:4]), jax.tree.leaves(full[1:4])):  # cache, state, info
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  if cfg is None:  # no memory: no state, no info, and the logits are the plain model's
    assert full.memory_state is None and full.info is None
    np.testing.assert_allclose(np.asarray(full.logits), np.asarray(tiny.logits(ids)),
                               rtol=1e-6, atol=1e-6)


# 4. Config validation.

@pytest.mark.parametrize("cls, field, value", [
    (CacheConfig, "lam", 1.5), (CacheConfig, "lam", -0.1), (CacheConfig, "window", 0),
    (CacheConfig, "window", 2.0), (CacheConfig, "theta", float("nan")),
    (HopfieldConfig, "window", 0), (HopfieldConfig, "beta", -1.0),
    (HopfieldConfig, "alpha", float("inf")), (HopfieldConfig, "pool", "max"),
    (SteeringConfig, "burn_in", 0), (SteeringConfig, "burn_in", True),
    (SteeringConfig, "alpha", -0.5), (FastWeightsConfig, "lam", -0.1),
    (FastWeightsConfig, "eta", 1.5), (FastWeightsConfig, "pool", "sum"),
    (DynamicEvalConfig, "lr", float("nan")), (DynamicEvalConfig, "lr", -1e-3),
    (DynamicEvalConfig, "layer", -1)])
def test_config_rejects_out_of_range(cls, field, value):
  """An out-of-range field raises InputError naming the field and the value."""
  with pytest.raises(InputError, match=rf"^{field}={value!r}"):
    cls(**{field: value})


def test_config_accepts_bounds_and_checks_layer():
  """Boundary values are accepted; a host layer beyond the model is refused."""
  CacheConfig(lam=0.0, window=1, theta=0.0)
  CacheConfig(lam=1.0)
  HopfieldConfig(window=1, beta=0.0, alpha=0.0)
  SteeringConfig(burn_in=1, alpha=0.0)
  FastWeightsConfig(lam=1.0, eta=0.0)
  DynamicEvalConfig(lr=0.0)
  for cfg in ONE_OF_EACH:
    dataclasses.replace(cfg, layer=1).check_model(CONFIG)
    with pytest.raises(InputError, match="layer=2"):
      dataclasses.replace(cfg, layer=2).check_model(CONFIG)


# 5. Orbax round trips.

def meta_model():
  return random_model(vocab_size=V)  # spec "tiny"; its config is saved with the state


def assert_same_state(got, want):
  assert type(got) is type(want)
  for f in dataclasses.fields(want):
    g, w = np.asarray(getattr(got, f.name)), np.asarray(getattr(want, f.name))
    assert (g.dtype, g.shape) == (w.dtype, w.shape), f.name
    np.testing.assert_array_equal(g, w, err_msg=f.name)


@pytest.mark.parametrize("cfg", ONE_OF_EACH, ids=lambda c: c.kind)
def test_checkpoint_round_trip(tmp_path, cfg):
  """Each memory's state (single and batched) survives Orbax; another config is refused."""
  params = {"lm_head": {"kernel": jnp.ones((D, V), jnp.float32) / D}}
  one = drive(cfg, random_passes(6, (5, 1, 3)), params)[1]
  other = drive(cfg, random_passes(7, (2, 1)), params)[1]
  assert int(one.step) == 3
  batched = jax.tree.map(lambda a, b: jnp.stack([a, b]), one, other)
  for i, state in enumerate([one, batched]):
    path = tmp_path / f"ck{i}"
    checkpoint.save_state(path, state, memory=cfg, model=meta_model(), run=i)
    restored = checkpoint.restore_state(path, memory=cfg, model="tiny")
    assert_same_state(restored.state, state)
    assert restored.memory == cfg and restored.user == {"run": i}
    assert checkpoint.memory_from_dict(restored.meta["memory_config"]) == cfg
    assert restored.meta["memory_config"] == cfg.to_dict()
  for wrong in [c for c in ONE_OF_EACH if c.kind != cfg.kind] + [dataclasses.replace(cfg, layer=1)]:
    with pytest.raises(InputError, match="different memory config"):
      checkpoint.restore_state(path, memory=wrong, model="tiny")
  with pytest.raises(InputError, match="made with model 'tiny'"):
    checkpoint.restore_state(path, memory=cfg, model="other")


# 6. The Memory base class: the default feedback and the KINDS registry.

@flax.struct.dataclass
class ConstantState:
  feedback: jax.Array  # [D]
  step: jax.Array  # []


def test_default_feedback_is_state_feedback_and_a_new_kind_registers(tiny):
  """A subclass that sets `kind` registers itself in KINDS (and checkpoint configs find it);
  one that does not set `kind` does not; `Memory.feedback` returns `state.feedback`, and that
  is what the engine adds at the host layer."""
  assert {"attractor", "cache", "hopfield", "steering", "fastweights",
          "dynamic-eval"} <= set(KINDS)
  assert KINDS["cache"] is CacheConfig and "constant-test" not in KINDS
  try:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ConstantFeedback(Memory):
      """Adds a fixed vector after the host layer's attention; learns nothing."""

      kind = "constant-test"
      scale: float = 1.0

      def fresh_state(self, model_config, key, prompt_attn_TxD=None):
        v = jax.random.normal(key, (model_config.width,), jnp.float32)
        return ConstantState(feedback=self.scale * v, step=jnp.zeros((), jnp.int32))

      def observe(self, state, obs, params):
        return state.replace(step=state.step + 1), Info(feedback_norm=jnp.linalg.norm(
            state.feedback))

    assert KINDS["constant-test"] is ConstantFeedback

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Unnamed(ConstantFeedback):  # inherits the kind, does not define one
      pass

    assert KINDS["constant-test"] is ConstantFeedback and Unnamed.kind == "constant-test"
    assert "feedback" not in ConstantFeedback.__dict__  # the base class's feedback runs
    memory = ConstantFeedback(layer=1, scale=3.0)
    assert checkpoint.memory_from_dict(memory.to_dict()) == memory
    state = memory.fresh_state(tiny.config, jax.random.key(4))
    assert memory.feedback(state) is state.feedback
    assert Memory.feedback(memory, state) is state.feedback
    assert float(jnp.linalg.norm(state.feedback)) > 1.0

    ids = jnp.asarray([PROMPT])
    batched = jax.tree.map(lambda a: a[None], state)
    out = tiny.engine(memory).step(tiny.params, ids, jnp.arange(len(PROMPT))[None], None, batched)
    assert int(out.memory_state.step[0]) == 1
    np.testing.assert_allclose(float(out.info.feedback_norm[0]),
                               float(jnp.linalg.norm(state.feedback)), rtol=1e-6)
    fed = tiny.taps(ids, memory=memory, state=batched)
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(fed.logits), rtol=1e-5,
                               atol=1e-5)
    plain = tiny.logits(ids)  # the feedback changed the pass
    assert np.abs(np.asarray(out.logits) - np.asarray(plain)).max() > 1e-2
    zero = tiny.engine(memory).step(tiny.params, ids, jnp.arange(len(PROMPT))[None], None,
                                    jax.tree.map(jnp.zeros_like, batched))
    np.testing.assert_allclose(np.asarray(zero.logits), np.asarray(plain), rtol=1e-6, atol=1e-6)
  finally:
    KINDS.pop("constant-test", None)


@pytest.mark.parametrize("memory", [p for p in presets.values() if p is not None] + [
    aj.ControlConfig(direction=d) for d in ("prompt", "average", "random")])
def test_a_silent_start_has_no_feedback(tiny, memory):
  """Every built-in memory says `starts_silent` (so seeds share the prompt's pass), and its
  fresh state's feedback is indeed zero or None, whatever the key and prompt."""
  memory = dataclasses.replace(memory, layer=1)
  assert type(memory).starts_silent
  prompt_attn = jax.random.normal(jax.random.key(9), (5, tiny.config.width))
  for seed in range(3):
    fresh = memory.fresh_state(tiny.config, jax.random.key(seed), prompt_attn)
    feedback = memory.feedback(fresh)
    assert feedback is None or not np.asarray(feedback).any()


def test_default_host_layer_is_the_middle_layer_of_the_model():
  """Presets name no layer: a memory sits on the middle layer of whatever model runs it."""
  smol, gemma = (dataclasses.replace(CONFIG, num_layers=n) for n in (30, 18))
  assert presets["seed"].layer is None
  assert presets["seed"].host_layer(smol) == 15 and presets["seed"].host_layer(gemma) == 9
  assert dataclasses.replace(presets["cache"], layer=3).host_layer(gemma) == 3
  with pytest.raises(InputError, match="layer=20 is beyond the model's 18 layers"):
    dataclasses.replace(presets["seed"], layer=20).check_model(gemma)
