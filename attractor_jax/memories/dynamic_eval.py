"""Dynamic evaluation (Krause et al., 2018): SGD on some of the model's parameters on the text
already scored; the one memory that changes weights, the contrast case.

The parameters adapted are the output side of the model, where the gradient needs no second
forward pass: a relative gain g on the final hidden state (equivalent to rescaling the final
norm's scale by 1 + g) and a bias b on the logits, both starting at zero:

  logits = unembed(h * (1 + g)) + b.

After each pass, every (hidden state, next token) pair it completed gives one SGD step
(optax) on their mean cross-entropy: the pass is scored before it is learned from.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from attractor_jax.memories.base import Info, Memory, Observation, pass_pairs, unembed
from attractor_jax.validation import check_range


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicEvalConfig(Memory):
  """lr the SGD step size (0 = inert)."""

  kind = "dynamic-eval"
  starts_silent = True
  uses_logits = True

  lr: float = 0.01

  def __post_init__(self):
    super().__post_init__()
    check_range("lr", self.lr, 0.0, 1e3)

  def fresh_state(self, model_config, key, prompt_attn_TxD=None) -> "DynamicEvalState":
    D, V = model_config.width, model_config.vocab_size
    return DynamicEvalState(gain=jnp.zeros((D,), jnp.float32), bias=jnp.zeros((V,), jnp.float32),
                            pending=jnp.zeros((D,), jnp.float32), pending_ok=jnp.zeros((), bool),
                            step=jnp.zeros((), jnp.int32))

  def feedback(self, state):
    return None  # it adapts the output layer, not the residual stream

  def read(self, state, obs: Observation, params):
    h = obs.hidden.astype(jnp.float32)
    return obs.logits + unembed(params, h * state.gain[None]) + state.bias[None]

  def observe(self, state, obs: Observation, params):
    keys_T, next_T, _, ok_T = pass_pairs(state.pending, state.pending_ok, obs)
    adapted = {"gain": state.gain, "bias": state.bias}

    def loss(p):
      logits = unembed(params, keys_T.astype(jnp.float32) * (1.0 + p["gain"][None])) + p["bias"][None]
      nll_T = -jnp.take_along_axis(jax.nn.log_softmax(logits), next_T[:, None], axis=1)[:, 0]
      return jnp.sum(nll_T * ok_T) / jnp.maximum(ok_T.sum(), 1)

    sgd = optax.sgd(self.lr)
    updates, _ = sgd.update(jax.grad(loss)(adapted), sgd.init(adapted))
    adapted = optax.apply_updates(adapted, updates)
    new = DynamicEvalState(gain=adapted["gain"], bias=adapted["bias"],
                           pending=obs.hidden[-1].astype(jnp.float32),
                           pending_ok=jnp.ones((), bool), step=state.step + 1)
    return new, Info(feedback_norm=jnp.zeros((), jnp.float32))

  def summary(self, state):
    return {**super().summary(state), "gain_norm": float(jnp.linalg.norm(state.gain)),
            "bias_norm": float(jnp.linalg.norm(state.bias))}


@flax.struct.dataclass
class DynamicEvalState:
  gain: jax.Array  # [D]: relative gain on the final hidden state
  bias: jax.Array  # [V]: logit bias
  pending: jax.Array  # [D]: the last hidden state, waiting for its next token
  pending_ok: jax.Array  # [] bool
  step: jax.Array  # [] int32
