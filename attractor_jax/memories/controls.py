"""Equal-norm controls for the attractor layer's feedback (docs/method.md, "Controls").

Each adds a vector of a fixed size, `feedback_ratio` times the host layer's residual norm,
in one direction, at the same place as the attractor's feedback (the size is the state's
`ratio`, `feedback_ratio` when fresh; the suite sets it per row to match another memory's
realised size):
  "prompt":  the mean attention output of the prompt (a fixed steering vector);
  "average": an exponential moving average of the pooled attention output x, rate `rate` (the
             attractor layer without attractors);
  "random":  a random direction drawn once from the init key.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.errors import InputError
from attractor_jax.memories.base import Info, Memory, Observation, Pool, pool, residual_norm, unit
from attractor_jax.validation import check_choice, check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlConfig(Memory):
  """A feedback of fixed relative size in a prompt, moving-average or random direction."""

  kind = "control"
  starts_silent = True
  uses_prompt = True

  direction: Literal["prompt", "average", "random"] = "prompt"
  feedback_ratio: float = 0.01
  rate: float = 0.1
  pool: Pool = "last"

  def __post_init__(self):
    super().__post_init__()
    check_choice("direction", self.direction, ("prompt", "average", "random"))
    check_range("feedback_ratio", self.feedback_ratio, 0.0, 10.0)
    check_range("rate", self.rate, 0.0, 1.0)
    check_choice("pool", self.pool, ("last", "mean"))

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "ControlState":
    D = model_config.width
    if self.direction == "prompt":
      if prompt_attn_TxD is None:
        raise InputError("direction='prompt' needs the prompt's attention outputs "
                         "(prompt_attn_TxD)")
      vector = jnp.mean(prompt_attn_TxD.astype(jnp.float32), axis=0)
    elif self.direction == "random":
      vector = jax.random.normal(key, (D,), jnp.float32)
    else:
      vector = jnp.zeros((D,), jnp.float32)
    return ControlState(vector=vector, feedback=jnp.zeros((D,), jnp.float32),
                        ratio=jnp.asarray(self.feedback_ratio, jnp.float32),
                        step=jnp.zeros((), jnp.int32))

  def observe(self, state, obs: Observation, params):
    vector = state.vector
    if self.direction == "average":
      vector = vector + self.rate * (pool(obs.attn_out, self.pool) - vector)
    feedback = state.ratio * residual_norm(obs.residual) * unit(vector)
    new = ControlState(vector=vector, feedback=feedback, ratio=state.ratio, step=state.step + 1)
    return new, Info(feedback_norm=jnp.linalg.norm(feedback))


@flax.struct.dataclass
class ControlState:
  vector: jax.Array  # [D]: the direction (fixed, or the moving average of x)
  feedback: jax.Array  # [D]: added to the residual stream in the next pass
  ratio: jax.Array  # [] float32: |feedback| / residual norm
  step: jax.Array  # [] int32: updates made so far
