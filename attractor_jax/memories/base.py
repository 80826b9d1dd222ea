"""What every memory shares: the per-pass Observation, the Memory protocol, and helpers.

A memory is a frozen, hashable config object (static under jit) with pure methods, each
written for one sequence (rows and seeds are `jax.vmap` axes):

  fresh_state(model_config, key, prompt_attn_TxD=None) -> state   a new state pytree
  observe(state, obs, params) -> (state, info)    learn from the pass
  feedback(state) -> [D] or None      what the next pass adds to the host layer's residual stream
  read(state, obs, params) -> [T, V]  this pass's output logits (mixing memories change them)

A subclass writes the first two; the rest, and what generic code asks of a memory (how many
updates a state has seen, what a pass reports, which tasks it refuses, the hint a NaN error
gives, its summary), have defaults. `read` sees the state from before the pass; `observe`
then updates it. `info` is any pytree; traces keep it per pass. No memory is `memory=None`.
See docs/method.md for the attractor layer and the related-work memories.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import flax.struct
import jax
import jax.numpy as jnp

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.validation import check_choice, check_int

COS_EPS = 1e-8
Pool = Literal["last", "mean"]
KINDS: dict[str, type["Memory"]] = {}  # every memory class by its `kind`, as checkpoints name it


class Observation(flax.struct.PyTreeNode):
  """What one pass shows a memory, for one sequence."""

  tokens: jax.Array  # [T] int32: the pass's input tokens
  positions: jax.Array  # [T] int32
  attn_out: jax.Array  # [T, D]: the host layer's attention output (after the feedback when the
  # loop is closed, before it when open)
  residual: jax.Array  # [T, D]: the host layer's residual stream where the feedback enters
  hidden: jax.Array  # [T, D]: the final hidden state (after the final norm: unembedding input)
  logits: jax.Array  # [T, V] float32: the model's logits ([1, V], the last row, when the
  # caller asked only for it and the memory does not use logits)


class Info(flax.struct.PyTreeNode):
  """What one update reports for traces (memories with more to say extend it)."""

  feedback_norm: jax.Array  # []: norm of the feedback the next pass receives (0 if none)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Memory:
  """Base of every memory config: the host layer, validation, and the protocol's defaults.

  A subclass sets `kind` (its name in checkpoints; defining the class registers it) and
  writes `fresh_state` and `observe`. It sets `starts_silent = True` when a fresh state's
  feedback is zero (seeds then share the prompt's pass); a subclass that overrides
  `fresh_state` or `feedback` without saying so again is not taken to start silent.
  """

  kind: ClassVar[str]
  uses_prompt: ClassVar[bool] = False  # init wants the prompt's attention outputs
  uses_logits: ClassVar[bool] = False  # read or observe looks at the pass's logits
  # A fresh state's feedback is zero (or None), whatever the key: the prompt's pass is the
  # plain model's, so a fresh memory starts from that pass and seeds sharing a prompt share it.
  starts_silent: ClassVar[bool] = False
  # What an error about NaN or Inf in a pass tells the user to change.
  nonfinite_hint: ClassVar[str] = "lower the memory's strength"

  layer: int | None = None  # the host layer; None: the middle layer of the model it runs in
  # Where the feedback enters the host layer: "open", after its attention (the memory's input,
  # the attention output, never depends on its own feedback under teacher forcing); "closed",
  # at the layer's input, before its attention (the attention output depends on it).
  loop: Literal["open", "closed"] = "open"

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "kind" in cls.__dict__:
      KINDS[cls.kind] = cls
    overrides = {"fresh_state", "feedback"} & set(cls.__dict__)
    if overrides and "starts_silent" not in cls.__dict__:
      cls.starts_silent = False

  def __post_init__(self):
    if self.layer is not None:
      check_int("layer", self.layer, 0)
    check_choice("loop", self.loop, ("open", "closed"))

  def host_layer(self, model_config: ModelConfig) -> int:
    """The layer this memory sits on in a model of `model_config`."""
    return model_config.num_layers // 2 if self.layer is None else self.layer

  def check_model(self, model_config: ModelConfig):
    """Refuses a host layer the model does not have."""
    if self.host_layer(model_config) >= model_config.num_layers:
      raise InputError(f"layer={self.layer} is beyond the model's {model_config.num_layers} "
                       f"layers: pass 0 <= layer < {model_config.num_layers}")

  def fresh_state(self, model_config: ModelConfig, key, prompt_attn_TxD=None):
    raise NotImplementedError

  def observe(self, state, obs: Observation, params):
    raise NotImplementedError

  def feedback(self, state) -> jax.Array | None:
    """What the next pass adds to the host layer's residual stream: `state.feedback` (None,
    nothing, for a state without one)."""
    return getattr(state, "feedback", None)

  def read(self, state, obs: Observation, params) -> jax.Array:
    return obs.logits

  def updates(self, state) -> jax.Array | None:
    """How many updates `state` has seen ([] int; None when the memory does not count them):
    `state.step`, where the built-in memories count them."""
    return getattr(state, "step", None)

  def activity(self, info) -> dict[str, jax.Array]:
    """Per-pass numbers for traces and reports, each [] (e.g. the attractor's share of banks
    with the gate open); reports average them over passes. None by default."""
    return {}

  def check_task(self, task: str):
    """Refuses (InputError) a task this config cannot run: "scoring" reads scored text into
    the memory token by token (perplexity, forced reads). Every task by default."""

  def summary(self, state) -> dict[str, Any]:
    """A few numbers about a final state (one sequence), for the CLI and the demo."""
    updates = self.updates(state)
    return {"kind": self.kind, **({} if updates is None else {"step": int(updates)})}

  def to_dict(self) -> dict[str, Any]:
    """The config as JSON-able data, `kind` included (checkpoints store it)."""
    return {"kind": self.kind, **dataclasses.asdict(self)}


def abstract_state(memory: Memory, model_config: ModelConfig, batch: tuple[int, ...] = ()):
  """The state's shapes and dtypes (for checkpoints and checks), with leading `batch` axes."""
  prompt = jnp.zeros((1, model_config.width), jnp.float32)
  one = jax.eval_shape(lambda k: memory.fresh_state(model_config, k, prompt), jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct((*batch, *s.shape), s.dtype), one)


def residual_norm(residual_TxD: jax.Array) -> jax.Array:
  """The residual stream's size in a pass: the root mean square over positions of its norm."""
  r = residual_TxD.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(r), axis=-1)))


def pool(x_TxD: jax.Array, how: Pool) -> jax.Array:
  """A pass's vector: its last position's, or the mean over its positions (float32)."""
  return (x_TxD[-1] if how == "last" else jnp.mean(x_TxD, axis=0)).astype(jnp.float32)


def unit(x, axis=-1):
  """x scaled to unit norm along `axis` (zero stays zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), COS_EPS)


def cosine(x_D, a_AxD):
  """cos(x, a_i) for each row i of `a` (0 where a norm is 0)."""
  num = jnp.einsum("d,kd->k", x_D, a_AxD)
  den = jnp.linalg.norm(x_D) * jnp.linalg.norm(a_AxD, axis=-1)
  return num / jnp.maximum(den, COS_EPS)


def pass_pairs(pending_D, pending_ok, obs: Observation):
  """The (hidden state, next token) pairs this pass completes, one per position j:
  (the hidden state before token j, token j). Token 0's predecessor is the previous pass's
  last hidden state (`pending`, valid when `pending_ok`). Returns keys [T, D], next tokens
  [T], their positions [T] and validity [T]."""
  keys = jnp.concatenate([pending_D[None], obs.hidden[:-1]])
  ok = jnp.concatenate([pending_ok[None], jnp.ones(obs.tokens.shape[0] - 1, bool)])
  return keys, obs.tokens, obs.positions, ok


def push(buffer_WxF, new_TxF):
  """A FIFO of the last W rows: `buffer` (oldest first) with `new` appended."""
  W = buffer_WxF.shape[0]
  return jnp.concatenate([buffer_WxF, new_TxF.astype(buffer_WxF.dtype)])[-W:]


def unembed(params, hidden_TxD):
  """Logits of final hidden states with the model's [D, V] output matrix (tied or not)."""
  return hidden_TxD @ params["lm_head"]["kernel"]
