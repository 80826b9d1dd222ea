"""The attractor layer (docs/method.md): config, state pytree, init, the per-pass update and read-out.

Everything here is written for one sequence; batches and seeds are `jax.vmap` axes.
Shape suffixes (docs/glossary.md): N banks, A attractors per bank, D model width, T positions
of a pass.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Info, Memory, Pool, cosine, pool, residual_norm
from attractor_jax.validation import check_bool, check_choice, check_int, check_range


GATE_OPEN = 0.5  # traces and reports count a gate (UpdateInfo.gate, [N]) above this as open


def gate_open(gate):
  """Where a gate counts as open (g > GATE_OPEN), elementwise, for NumPy and JAX arrays alike:
  the share of passes with the gate open is this averaged over passes and banks."""
  return gate > GATE_OPEN


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timescale:
  """How fast one bank learns (eta), strengthens (gamma) and decays (lam)."""

  eta: float = 0.1
  gamma: float = 0.1
  lam: float = 0.02

  def __post_init__(self):
    for name in ("eta", "gamma", "lam"):
      check_range(f"timescale.{name}", getattr(self, name), 0.0, 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttractorConfig(Memory):
  """Every knob of docs/method.md; frozen, hashable, validated on construction.

  `timescales` also takes dicts (as a checkpoint stores them).
  """

  kind = "attractor"
  starts_silent = True
  uses_prompt = True
  nonfinite_hint = "lower alpha or beta"

  num_attractors: int = 8
  pool: Pool = "last"
  beta: float = 10.0
  theta_act: float = 0.0
  timescales: tuple[Timescale, ...] = (Timescale(),)
  decay: Literal["unused", "all"] = "unused"
  eps_active: float = 0.05
  reseed_dead: bool = False
  s_dead: float = 0.01
  dead_after: int = 64
  gate: Literal["none", "similarity"] = "none"
  theta_gate: float = 0.5
  tau_gate: float = 0.05
  burn_in_steps: int = 0
  burn_in_strength: float = 0.0
  alpha: float = 0.1
  # None: the feedback is alpha * sum_n g_n m_n. A number: alpha is ignored and the feedback
  # is scaled so that a full-strength attractor equal to x, gate open, gets this fraction of
  # the host layer's residual norm (docs/method.md, "Strength relative to the residual").
  feedback_ratio: float | None = None
  init: Literal["noise", "prompt"] = "noise"
  init_noise: float = 0.1
  init_strength: float = 0.0
  center: bool = False

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "timescales", tuple(
        Timescale(**t) if isinstance(t, dict) else t for t in self.timescales))
    check_int("num_attractors", self.num_attractors, 1, 4096)
    check_choice("pool", self.pool, ("last", "mean"))
    check_choice("decay", self.decay, ("unused", "all"))
    check_choice("gate", self.gate, ("none", "similarity"))
    check_choice("init", self.init, ("noise", "prompt"))
    check_bool("reseed_dead", self.reseed_dead)
    check_bool("center", self.center)
    check_range("beta", self.beta, 0.0, 1e4)
    check_range("theta_act", self.theta_act, -1.0, 1.0)
    check_range("eps_active", self.eps_active, 0.0, 1.0)
    check_range("s_dead", self.s_dead, 0.0, 1.0)
    check_int("dead_after", self.dead_after, 0)
    check_range("theta_gate", self.theta_gate, -1.0, 1.0)
    check_range("tau_gate", self.tau_gate, 1e-6, 1e3)
    check_int("burn_in_steps", self.burn_in_steps, 0)
    check_range("burn_in_strength", self.burn_in_strength, 0.0, 1.0)
    check_range("alpha", self.alpha, 0.0, 1e3)
    if self.feedback_ratio is not None:
      check_range("feedback_ratio", self.feedback_ratio, 0.0, 10.0)
    check_range("init_noise", self.init_noise, 0.0, 1e3)
    check_range("init_strength", self.init_strength, 0.0, 1.0)
    if not self.timescales or not all(isinstance(t, Timescale) for t in self.timescales):
      raise InputError(f"timescales={self.timescales!r}: pass a non-empty tuple of Timescale")

  @property
  def num_banks(self) -> int:
    return len(self.timescales)

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "AttractorState":
    return init_state(self, model_config, key, prompt_attn_TxD)

  def observe(self, state, obs, params):
    return update(self, state, pool(obs.attn_out, self.pool), residual_norm(obs.residual),
                  tokens=obs.attn_out.shape[0])

  def activity(self, info):
    """The share of banks whose gate is open in this pass (`gate_open`), the strongest
    attractor's share of its bank's strength (`winner_share`), the best match (max_k c_k)
    and cos(feedback, running mean of x), each a mean over banks."""
    return {"gate_open": jnp.mean(gate_open(info.gate)),
            "winner_share": jnp.mean(winner_share(info.strength)),
            "max_sim": jnp.mean(info.max_sim), "steering_cos": info.steering_cos}

  def check_task(self, task: str):
    if task == "scoring" and self.init == "prompt":
      raise InputError("init='prompt' would copy scored tokens into the memory: use "
                       "init='noise' for perplexity and forced reads")

  def summary(self, state):
    """Mean strength, active and dead attractors, updates made."""
    s, idle = np.asarray(state.strength), np.asarray(state.idle)
    return {**super().summary(state),
            "mean_strength": float(s.mean()), "active": int((idle == 0).sum()),
            "dead": int(((s < self.s_dead) & (idle > self.dead_after)).sum()),
            "attractors": int(s.size), "feedback_norm": float(np.linalg.norm(state.feedback)),
            "winner_share": float(winner_share(state.strength).mean())}


@flax.struct.dataclass
class AttractorState:
  """One sequence's attractor memory (docs/method.md's table, with a leading bank axis N)."""

  vectors: jax.Array  # [N, A, D] in units of the host layer's attention output
  strength: jax.Array  # [N, A] in [0, 1]
  idle: jax.Array  # [N, A] int32: passes since last active
  step: jax.Array  # [] int32: updates made so far
  tokens: jax.Array  # [] int32: tokens read so far (drives burn-in)
  feedback: jax.Array  # [D]: added to the residual stream in the next pass
  mean: jax.Array  # [D]: running mean of x (used when cfg.center)
  sigma: jax.Array  # []: noise scale of (re-)drawn attractors
  rng: jax.Array  # [2] uint32: key data for re-seeding


class UpdateInfo(Info):
  """What one update saw, and the strengths it left: for traces and summaries."""

  strength: jax.Array  # [N, A] after the update
  max_sim: jax.Array  # [N] max_k c_k
  gate: jax.Array  # [N]
  active: jax.Array  # [N, A] bool
  steering_cos: jax.Array  # []: cos(feedback, running mean of x): 1 is a plain steering vector


def init_state(cfg: AttractorConfig, model_config: ModelConfig, key,
               prompt_attn_TxD: jax.Array | None = None) -> AttractorState:
  """A fresh state. `init="noise"` draws N(0, sigma^2) with sigma the RMS of the prompt's
  attention output (or `cfg.init_noise` without a prompt); `init="prompt"` takes K prompt
  attention outputs at random positions plus small noise."""
  cfg.check_model(model_config)
  N, A, D = cfg.num_banks, cfg.num_attractors, model_config.width
  k_vec, k_pos, k_rng = jax.random.split(key, 3)
  if prompt_attn_TxD is None:
    if cfg.init == "prompt":
      raise InputError("init='prompt' needs the prompt's attention outputs (prompt_attn_TxD)")
    sigma = jnp.asarray(cfg.init_noise, jnp.float32)
  else:
    prompt_attn_TxD = prompt_attn_TxD.astype(jnp.float32)
    sigma = jnp.sqrt(jnp.mean(jnp.square(prompt_attn_TxD)))
  noise = jax.random.normal(k_vec, (N, A, D), jnp.float32)
  if cfg.init == "prompt":
    idx_NxA = jax.random.randint(k_pos, (N, A), 0, prompt_attn_TxD.shape[0])
    vectors = prompt_attn_TxD[idx_NxA] + 0.1 * sigma * noise
  else:
    vectors = sigma * noise
  return AttractorState(
      vectors=vectors,
      strength=jnp.full((N, A), cfg.init_strength, jnp.float32),
      idle=jnp.zeros((N, A), jnp.int32),
      step=jnp.zeros((), jnp.int32),
      tokens=jnp.zeros((), jnp.int32),
      feedback=jnp.zeros((D,), jnp.float32),
      mean=jnp.zeros((D,), jnp.float32),
      sigma=sigma,
      rng=jax.random.key_data(k_rng),
  )


def _update_bank(cfg: AttractorConfig, ts: Timescale, a_AxD, s_A, idle_A, x_D, mean_D, tokens,
                 sigma, reseed_key):
  """Steps 2-10 of docs/method.md for one bank; returns (a, s, idle, m_D, gate, max_sim, active)."""
  offset = mean_D if cfg.center else jnp.zeros_like(mean_D)
  c_A = cosine(x_D - offset, a_AxD - offset[None, :])
  w_A = jax.nn.softmax(cfg.beta * c_A)
  act_A = w_A * (c_A >= cfg.theta_act)
  a_AxD = a_AxD + ts.eta * act_A[:, None] * (x_D[None, :] - a_AxD)
  if cfg.decay == "all":
    s_A = (1.0 - ts.lam) * s_A
  s_A = s_A + ts.gamma * act_A * (1.0 - s_A)
  active_A = act_A >= cfg.eps_active
  if cfg.decay == "unused":
    s_A = jnp.where(active_A, s_A, (1.0 - ts.lam) * s_A)
  idle_A = jnp.where(active_A, 0, idle_A + 1)
  if cfg.reseed_dead:
    dead_A = (s_A < cfg.s_dead) & (idle_A > cfg.dead_after)
    fresh_AxD = sigma * jax.random.normal(reseed_key, a_AxD.shape, a_AxD.dtype)
    a_AxD = jnp.where(dead_A[:, None], fresh_AxD, a_AxD)
    idle_A = jnp.where(dead_A, 0, idle_A)
  m_D = jnp.einsum("k,k,kd->d", w_A, s_A, a_AxD)
  max_sim = jnp.max(c_A)
  if cfg.gate == "similarity":
    gate = jax.nn.sigmoid((max_sim - cfg.theta_gate) / cfg.tau_gate)
  else:
    gate = jnp.ones((), jnp.float32)
  burning_in = (tokens < cfg.burn_in_steps) | (jnp.max(s_A) < cfg.burn_in_strength)
  gate = jnp.where(burning_in, 0.0, gate)
  return a_AxD, s_A, idle_A, m_D, gate, max_sim, active_A


def winner_share(strength_NxA):
  """Each bank's strongest attractor's share of the bank's total strength: [N]."""
  s = jnp.asarray(strength_NxA)
  return jnp.max(s, axis=-1) / jnp.maximum(jnp.sum(s, axis=-1), 1e-30)


def update(cfg: AttractorConfig, state: AttractorState, x_D: jax.Array, residual=None,
           tokens: int = 1):
  """One pass's update from the host layer's pooled attention output x; returns (state, info).

  The new `feedback` is what the *next* pass adds to the residual stream. `residual`, the
  pass's residual norm (`memories.base.residual_norm`), sets its scale when
  `cfg.feedback_ratio` is given. `tokens`: the pass's length; burn-in counts tokens.
  """
  x_D = x_D.astype(jnp.float32)
  step = state.step + 1
  tokens_read = state.tokens + tokens
  key = jax.random.wrap_key_data(state.rng)
  key, reseed = jax.random.split(key)
  reseed_N = jax.random.split(reseed, cfg.num_banks)
  banks = [
      _update_bank(cfg, ts, state.vectors[n], state.strength[n], state.idle[n], x_D,
                   state.mean, tokens_read, state.sigma, reseed_N[n])
      for n, ts in enumerate(cfg.timescales)
  ]
  a, s, idle, m, gate, max_sim, active = (jnp.stack(parts) for parts in zip(*banks))
  if cfg.feedback_ratio is None:
    scale = cfg.alpha
  else:
    if residual is None:
      raise InputError("feedback_ratio needs the pass's residual norm: pass residual=")
    scale = cfg.feedback_ratio * residual / (cfg.num_banks * jnp.maximum(jnp.linalg.norm(x_D),
                                                                         1e-30))
  feedback_D = scale * jnp.einsum("n,nd->d", gate, m)
  new_mean = state.mean + (x_D - state.mean) / step.astype(jnp.float32)
  new_state = AttractorState(vectors=a, strength=s, idle=idle, step=step, tokens=tokens_read,
                             feedback=feedback_D, mean=new_mean, sigma=state.sigma,
                             rng=jax.random.key_data(key))
  info = UpdateInfo(feedback_norm=jnp.linalg.norm(feedback_D), strength=s, max_sim=max_sim,
                    gate=gate, active=active, steering_cos=cosine(feedback_D, new_mean[None])[0])
  return new_state, info
