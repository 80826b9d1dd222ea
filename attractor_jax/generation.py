"""`aj.generate`: prompt in; text, tokens, the final memory state, trace and timing out."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import decoding
from attractor_jax.engine import Engine
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory, abstract_state
from attractor_jax.model import Model
from attractor_jax.prompts import buffer_length, cache_length, prompt_ids
from attractor_jax.sampling import SamplingState, Trace, check_finite, check_sampling
from attractor_jax.seeds import seed_keys


@dataclasses.dataclass
class Generation:
  """One generation: what came out, the final memory, and where to resume from."""

  text: str
  tokens: list[int]  # generated ids, up to and including EOS
  prompt_tokens: list[int]
  memory: Memory | None  # the memory that ran (None: none)
  state: Any  # final memory state (no batch axis); None without a memory
  run: SamplingState  # one row: last token, position, KV cache, memory state (to resume)
  sample_key: np.ndarray  # key data of the sampling key
  trace: Trace | None  # per generated token, when trace=True (NumPy)
  timing: dict[str, float]

  def summary(self) -> dict[str, Any] | None:
    """The memory's few summary numbers (the demo's and CLI's); None without a memory."""
    return None if self.memory is None else self.memory.summary(self.state)

  def to_json(self) -> dict[str, Any]:
    return {"text": self.text, "tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
            "tokens_per_s": self.timing["tokens_per_s"], "timing": self.timing,
            "memory": self.summary()}


def compile_and_run(program, args, static):
  """Runs a jitted program (the engine first in `args`), timing its compilation (cached
  after the first call) and its execution."""
  t0 = time.perf_counter()
  compiled = program.lower(*args, **static).compile()
  t1 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args[1:]))
  return out, t1 - t0, time.perf_counter() - t1


def generate(model: Model, prompt: str | Sequence[int], max_new_tokens: int = 200, *,
             memory: Memory | None = None, seed: int = 0, temperature: float = 0.0,
             top_p: float = 1.0, state=None, trace: bool = False,
             chat: bool = False) -> Generation:
  """Generates up to `max_new_tokens` after `prompt`, with `memory` on its host layer.

  Args:
    model: from `aj.load`.
    prompt: text, or token ids.
    memory: a memory config or preset (`aj.presets[...]`); None (preset `off`): no memory.
    seed: derives the memory's init key and the sampling key.
    temperature, top_p: 0 is greedy; else temperature and nucleus sampling.
    state: a memory state to continue from (persistent memory across prompts).
    trace: keep the per-pass trace (final hidden states, the memory's update info).
    chat: wrap the prompt in the tokenizer's chat template.
  Returns:
    A Generation.
  """
  engine = model.engine(memory)
  check_sampling(max_new_tokens, temperature, top_p)
  ids = prompt_ids(model, prompt, chat)
  init_key, sample_key = seed_keys(seed)
  if state is not None:
    check_state(state, memory, model)
    state = jax.tree.map(lambda a: jnp.asarray(a)[None], state)
  sampler = (jnp.float32(temperature), jnp.float32(top_p), jnp.int32(model.eos_id))
  rows, c0, p_s = compile_and_run(
      decoding.prefill, (engine, model.params, jnp.asarray(ids)[None], init_key[None],
                         sample_key[None], *sampler, state, 0),
      dict(cache_len=cache_length(model, len(ids), max_new_tokens),
           buffer=buffer_length(max_new_tokens)))
  run, c1, d_s = compile_and_run(
      decoding.decode, (engine, model.params, rows, sample_key[None], jnp.int32(max_new_tokens),
                        *sampler), {})
  out = _finished(model, engine, run, ids.tolist(), sample_key, trace, f"seed {seed}")
  out.timing = {"compile_s": c0 + c1, "prefill_s": p_s, "decode_s": d_s,
                "tokens_per_s": max(len(out.tokens) - 1, 1) / max(d_s, 1e-9)}
  return out


def resume(model: Model, run: dict, max_new_tokens: int, *, memory: Memory | None,
           temperature: float = 0.0, top_p: float = 1.0) -> Generation:
  """Continues a run restored by `checkpoint.restore_run` for `max_new_tokens` more tokens."""
  engine = model.engine(memory)
  check_sampling(max_new_tokens, temperature, top_p)
  rows = jax.tree.map(jnp.copy, run["rows"])  # decoding consumes its input; the caller keeps `run`
  sample_key = jax.random.wrap_key_data(run["sample_key"])
  need = cache_length(model, int(rows.position[0]), max_new_tokens)
  pad = need - rows.cache.max_len
  if pad > 0:  # grow the cache: the new slots are masked until written
    grow = lambda arrays: tuple(jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pad), (0, 0)])
                                  for a in arrays)
    rows = rows.replace(cache=rows.cache.replace(k=grow(rows.cache.k), v=grow(rows.cache.v)))
  rows = decoding.with_buffers(engine, model.params, rows, buffer_length(max_new_tokens))
  out, c, d_s = compile_and_run(
      decoding.decode, (engine, model.params, rows, sample_key[None], jnp.int32(max_new_tokens),
                        jnp.float32(temperature), jnp.float32(top_p), jnp.int32(model.eos_id)),
      {})
  out = _finished(model, engine, out, np.asarray(run["tokens"]).tolist(), sample_key, False,
                  "the resumed run")
  out.timing = {"compile_s": c, "prefill_s": 0.0, "decode_s": d_s,
                "tokens_per_s": len(out.tokens) / max(d_s, 1e-9)}
  return out


def _finished(model: Model, engine: Engine, run: SamplingState, prompt_tokens: list[int],
              sample_key, keep_trace: bool, name: str) -> Generation:
  """The Generation of a one-row decode (timing to be filled in), after checking that its
  memory stayed finite."""
  n = int(run.count[0])
  generated = np.asarray(run.tokens[0, :n]).tolist()
  final = None if run.memory_state is None else jax.tree.map(lambda a: a[0], run.memory_state)
  trace = jax.tree.map(lambda a: np.asarray(a[0, :n]), run.trace)
  updates = None if final is None else engine.memory.updates(final)
  check_finite(trace.finite[None], [n], [name], engine.memory,
               None if updates is None else [updates])
  return Generation(
      text=model.tokenizer.decode(generated) if model.tokenizer is not None else "",
      tokens=generated, prompt_tokens=prompt_tokens, memory=engine.memory, state=final, run=run,
      sample_key=np.asarray(jax.random.key_data(sample_key)),
      trace=trace if keep_trace else None, timing={})


def check_state(state, memory: Memory | None, model: Model):
  """Refuses a state whose type or shapes do not fit the memory and model, or not finite."""
  if memory is None:
    raise InputError("a state was given but there is no memory (preset 'off'): pass the "
                     "memory the state was made with")
  want = abstract_state(memory, model.config)
  if type(state) is not type(want):
    raise InputError(f"the state is a {type(state).__name__}, but memory {memory.kind!r} needs "
                     f"a {type(want).__name__}: restore a state made with the same preset")
  for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(want)):
    name = jax.tree_util.keystr(path).lstrip(".")
    if tuple(np.shape(leaf)) != spec.shape:
      raise InputError(f"state.{name} has shape {tuple(np.shape(leaf))}, but this config and "
                       f"model need {spec.shape}: restore a state made with the same config")
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all():
      raise InputError(f"state.{name} has NaN or Inf values: restore an earlier good state")
