"""Inference-only fast weights (Ba et al., 2016): a decaying sum of outer products of the
host layer's pooled attention outputs, read out by the current one and fed back.

  A <- lam A + eta u u^T,  u = x / |x|;   the next pass receives alpha * A x.

u is normalised so that A stays bounded (|A| <= eta / (1 - lam)) whatever the scale of x.
"""

from __future__ import annotations

import dataclasses
import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.memories.base import Info, Memory, Observation, Pool, pool, unit
from attractor_jax.validation import check_choice, check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class FastWeightsConfig(Memory):
  """lam the decay, eta the write rate, alpha the read-out scale (0 = inert)."""

  kind = "fastweights"
  starts_silent = True

  lam: float = 0.95
  eta: float = 0.05
  alpha: float = 0.1
  pool: Pool = "last"

  def __post_init__(self):
    super().__post_init__()
    check_range("lam", self.lam, 0.0, 1.0)
    check_range("eta", self.eta, 0.0, 1.0)
    check_range("alpha", self.alpha, 0.0, 1e3)
    check_choice("pool", self.pool, ("last", "mean"))

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "FastWeightsState":
    D = model_config.width
    return FastWeightsState(A=jnp.zeros((D, D), jnp.float32), feedback=jnp.zeros((D,), jnp.float32),
                            step=jnp.zeros((), jnp.int32))

  def observe(self, state, obs: Observation, params):
    x = pool(obs.attn_out, self.pool)
    u = unit(x)
    A = self.lam * state.A + self.eta * jnp.outer(u, u)
    feedback = self.alpha * (A @ x)
    return (FastWeightsState(A=A, feedback=feedback, step=state.step + 1),
            Info(feedback_norm=jnp.linalg.norm(feedback)))


@flax.struct.dataclass
class FastWeightsState:
  A: jax.Array  # [D, D]
  feedback: jax.Array  # [D]
  step: jax.Array  # [] int32
