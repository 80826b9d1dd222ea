"""A fixed steering vector (ActAdd-style, Turner et al. 2023): the mean attention output of
the host layer over the first `burn_in` tokens, then added with scale alpha to every later
pass, unchanged. The attractor layer with learning switched off after burn-in."""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.memories.base import Info, Memory, Observation
from attractor_jax.validation import check_int, check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteeringConfig(Memory):
  """burn_in tokens averaged into the vector, alpha its scale."""

  kind = "steering"
  starts_silent = True

  burn_in: int = 16
  alpha: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    check_int("burn_in", self.burn_in, 1)
    check_range("alpha", self.alpha, 0.0, 1e3)

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "SteeringState":
    D = model_config.width
    return SteeringState(total=jnp.zeros((D,), jnp.float32), count=jnp.zeros((), jnp.int32),
                         feedback=jnp.zeros((D,), jnp.float32), step=jnp.zeros((), jnp.int32))

  def observe(self, state, obs: Observation, params):
    T = obs.attn_out.shape[0]
    take_T = jnp.arange(T) < self.burn_in - state.count  # the pass's first tokens still needed
    total = state.total + jnp.einsum("t,td->d", take_T, obs.attn_out.astype(jnp.float32))
    count = state.count + take_T.sum(dtype=jnp.int32)
    done = count >= self.burn_in
    feedback = jnp.where(done, self.alpha * total / jnp.maximum(count, 1), 0.0)
    new = SteeringState(total=total, count=count, feedback=feedback, step=state.step + 1)
    return new, Info(feedback_norm=jnp.linalg.norm(feedback))


@flax.struct.dataclass
class SteeringState:
  total: jax.Array  # [D]: sum of the burn-in tokens' attention outputs
  count: jax.Array  # [] int32: burn-in tokens seen (stops at burn_in)
  feedback: jax.Array  # [D]: zero until burn-in ends, then fixed
  step: jax.Array  # [] int32
