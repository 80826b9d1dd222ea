"""One-step modern-Hopfield retrieval (Ramsauer et al., 2021) as residual feedback.

Stored patterns X are the host layer's last `window` pooled attention outputs; the pass's own
output x is the query; the next pass receives alpha * X softmax(beta X^T x), with X holding
the patterns stored *before* this pass (x itself is stored afterwards).
"""

from __future__ import annotations

import dataclasses
import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.memories.base import Info, Memory, Observation, Pool, pool, push
from attractor_jax.validation import check_choice, check_int, check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class HopfieldConfig(Memory):
  """window patterns kept, beta the inverse temperature (default 1/sqrt(D) when None)."""

  kind = "hopfield"
  starts_silent = True

  window: int = 64
  beta: float | None = None
  alpha: float = 0.1
  pool: Pool = "last"

  def __post_init__(self):
    super().__post_init__()
    check_int("window", self.window, 1, 1 << 16)
    if self.beta is not None:
      check_range("beta", self.beta, 0.0, 1e4)
    check_range("alpha", self.alpha, 0.0, 1e3)
    check_choice("pool", self.pool, ("last", "mean"))

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "HopfieldState":
    W, D = self.window, model_config.width
    return HopfieldState(patterns=jnp.zeros((W, D), jnp.float32), filled=jnp.zeros((W,), bool),
                         feedback=jnp.zeros((D,), jnp.float32), step=jnp.zeros((), jnp.int32))

  def observe(self, state, obs: Observation, params):
    x = pool(obs.attn_out, self.pool)
    beta = self.beta if self.beta is not None else x.shape[-1] ** -0.5
    scores = jnp.where(state.filled, beta * (state.patterns @ x), -jnp.inf)
    weights = jnp.where(state.filled.any(), jax.nn.softmax(scores), 0.0)
    feedback = self.alpha * (weights @ state.patterns)
    new = HopfieldState(patterns=push(state.patterns, x[None]),
                        filled=push(state.filled, jnp.ones((1,), bool)), feedback=feedback,
                        step=state.step + 1)
    return new, Info(feedback_norm=jnp.linalg.norm(feedback))


@flax.struct.dataclass
class HopfieldState:
  patterns: jax.Array  # [W, D]: pooled attention outputs, oldest first
  filled: jax.Array  # [W] bool
  feedback: jax.Array  # [D]
  step: jax.Array  # [] int32
