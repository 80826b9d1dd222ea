"""`aj.generate`: prompt in, text + tokens + final attractor state + timing out."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import sampling
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory, abstract_state
from attractor_jax.model import Model, check_tokens
from attractor_jax.presets import presets

prefill_jit = jax.jit(sampling.prefill, static_argnames=("decoder", "cfg", "cache_len", "eos_id"))
decode_jit = jax.jit(sampling.decode, static_argnames=("decoder", "cfg", "length", "eos_id"),
                     donate_argnames=("carry",))
_CACHE_ROUND = 128


@dataclasses.dataclass
class Generation:
  """One generation: what came out, the final memory, and where to resume from."""

  text: str
  tokens: list[int]  # generated ids, up to and including EOS
  prompt_tokens: list[int]
  state: Any  # final memory state (no batch axis); None when off
  carry: sampling.Carry  # token, position, step, KV cache, state: what a resume needs
  sample_key: np.ndarray  # key data of the sampling key
  trace: sampling.Trace | None  # per generated token, when trace=True (NumPy)
  timing: dict[str, float]

  def summary(self, cfg: Memory) -> dict[str, Any]:
    return summarize_state(self.state, cfg)


def summarize_state(state, cfg: Memory) -> dict[str, Any]:
  """The memory's few summary numbers (the demo's and CLI's), or {"enabled": False}."""
  if state is None or not cfg.enabled:
    return {"enabled": False}
  return cfg.summary(state)


def check_sampling(max_new_tokens: int, temperature: float, top_p: float):
  if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise InputError(f"max_new_tokens={max_new_tokens!r}: pass an integer >= 1")
  if not np.isfinite(temperature) or temperature < 0:
    raise InputError(f"temperature={temperature!r}: pass a number >= 0 (0 is greedy)")
  if not np.isfinite(top_p) or not 0 < top_p <= 1:
    raise InputError(f"top_p={top_p!r}: pass a number in (0, 1]")


def left_padded(model: Model, texts: Sequence[str], multiple: int = 1) -> np.ndarray:
  """The texts' token ids left-padded with newlines to one width, the longest rounded up to a
  multiple of `multiple`: int32 [texts, width]. Batches need one length; blank lines before
  a text leave it reading as it did."""
  ids = [model.tokenizer.encode(t) for t in texts]
  width = -(-max(map(len, ids)) // multiple) * multiple
  rows = np.full((len(ids), width), model.tokenizer.encode("\n")[0], np.int32)
  for row, row_ids in zip(rows, ids):
    row[width - len(row_ids):] = row_ids
  return rows


def prompt_ids(model: Model, prompt: str | Sequence[int], chat: bool = False) -> np.ndarray:
  """Tokenizes a prompt as the model's tokenizer does (chat template when asked)."""
  if isinstance(prompt, str):
    if not prompt.strip():
      raise InputError("the prompt is empty: pass some text")
    if model.tokenizer is None:
      raise InputError(f"model {model.spec!r} has no tokenizer: pass token ids instead of text")
    if chat:
      prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    prompt = model.tokenizer.encode(prompt)
  return np.asarray(check_tokens(prompt, model.config))[0]


def cache_length(model: Model, prompt_len: int, max_new_tokens: int) -> int:
  """KV slots for a run, rounded up so nearby lengths share one compilation."""
  need = prompt_len + max_new_tokens
  if need > model.config.max_len:
    raise InputError(
        f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) = {need} exceeds the "
        f"model's context {model.config.max_len}: shorten the prompt or lower max_new_tokens")
  return min(-(-need // _CACHE_ROUND) * _CACHE_ROUND, model.config.max_len)


def compile_and_run(jitted, args, static):
  """Runs a jitted function, timing compilation (cached after the first call) and execution."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args, **static).compile()
  t1 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  return out, t1 - t0, time.perf_counter() - t1


def generate(model: Model, prompt: str | Sequence[int], max_new_tokens: int = 200, *,
             attractor: Memory | None = None, seed: int = 0, temperature: float = 0.0,
             top_p: float = 1.0, state=None, trace: bool = False,
             chat: bool = False) -> Generation:
  """Generates up to `max_new_tokens` after `prompt`, with the attractor layer `attractor`.

  Args:
    attractor: a memory config or preset: an AttractorConfig or any `memories` config
      (default: `off`).
    seed: derives the memory's init key and the sampling key.
    state: a memory state to continue from (persistent memory across prompts).
    trace: record per-pass hidden states, feedback norms and (attractor) strengths,
      similarity and gate.
    chat: wrap the prompt in the tokenizer's chat template.
  """
  cfg = presets["off"] if attractor is None else attractor
  cfg.check_model(model.config)
  check_sampling(max_new_tokens, temperature, top_p)
  ids = prompt_ids(model, prompt, chat)
  init_key, sample_key = seed_keys(seed)
  if state is not None:
    check_state(state, cfg, model)
    state = jax.tree.map(lambda a: jnp.asarray(a)[None], state)
  eos = model.eos_id
  temp, top = jnp.float32(temperature), jnp.float32(top_p)
  (carry, row0), c0, p_s = compile_and_run(
      prefill_jit, (model.params, jnp.asarray(ids), init_key, sample_key, temp, top, state),
      dict(decoder=model.decoder, cfg=cfg, cache_len=cache_length(model, len(ids), max_new_tokens),
           eos_id=eos))
  first = int(carry.token)
  (tokens, count, carry, rows), c1, d_s = compile_and_run(
      decode_jit, (model.params, carry, sample_key, temp, top),
      dict(decoder=model.decoder, cfg=cfg, length=max_new_tokens - 1, eos_id=eos))
  generated = [first] + (np.asarray(tokens)[: int(count)].tolist() if first != eos else [])
  final = None if carry.state is None else jax.tree.map(lambda a: a[0], carry.state)
  rows = jax.tree.map(lambda r0, r: np.concatenate([np.asarray(r0)[None], np.asarray(r)]), row0, rows)
  check_finite(rows, len(generated), final)
  text = model.tokenizer.decode(generated) if model.tokenizer is not None else ""
  return Generation(
      text=text, tokens=generated, prompt_tokens=ids.tolist(), state=final, carry=carry,
      sample_key=np.asarray(jax.random.key_data(sample_key)),
      trace=jax.tree.map(lambda r: r[: len(generated)], rows) if trace else None,
      timing={"compile_s": c0 + c1, "prefill_s": p_s, "decode_s": d_s,
              "tokens_per_s": max(len(generated) - 1, 1) / max(d_s, 1e-9)})


def seed_keys(seed: int):
  """(attractor init key, sampling key) of a seed."""
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
    raise InputError(f"seed={seed!r}: pass an integer >= 0")
  init_key, sample_key = jax.random.split(jax.random.key(int(seed)))
  return init_key, sample_key


def check_state(state, cfg: Memory, model: Model):
  """Refuses a state whose type or shapes do not fit the config and model, or not finite."""
  if not cfg.enabled:
    raise InputError("a state was given but the preset is 'off': pass a preset with a memory")
  want = abstract_state(cfg, model.config)
  if type(state) is not type(want):
    raise InputError(f"the state is a {type(state).__name__}, but memory {cfg.kind!r} needs a "
                     f"{type(want).__name__}: restore a state made with the same preset")
  for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(want)):
    name = jax.tree_util.keystr(path).lstrip(".")
    if tuple(np.shape(leaf)) != spec.shape:
      raise InputError(f"state.{name} has shape {tuple(np.shape(leaf))}, but this config and "
                       f"model need {spec.shape}: restore a state made with the same config")
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all():
      raise InputError(f"state.{name} has NaN or Inf values: restore an earlier good state")


def check_finite(rows: sampling.Trace, passes: int, state):
  """Raises InputError naming the first of `passes` passes after which the state held NaN/Inf."""
  if rows.finite is None:
    return
  ok = np.asarray(rows.finite)[:passes]
  if ok.all():
    return
  i = int(np.argmin(ok))
  raise InputError(
      f"the memory state became NaN or Inf in the pass that produced token {i} of this call "
      f"(memory update {int(state.step) - (passes - 1 - i)}): lower alpha or beta, or "
      "restore an earlier good state")


def resume(model: Model, run: dict, max_new_tokens: int, *, attractor: Memory,
           temperature: float = 0.0, top_p: float = 1.0) -> Generation:
  """Continues a run restored by `checkpoint.restore_run` for `max_new_tokens` more tokens."""
  check_sampling(max_new_tokens, temperature, top_p)
  carry, sample_key = run["carry"], jax.random.wrap_key_data(run["sample_key"])
  need = cache_length(model, int(carry.position), max_new_tokens)
  pad = need - carry.cache.max_len
  if pad > 0:  # grow the cache: the new slots are masked until written
    grow = lambda arrays: tuple(jnp.pad(a, [(0, 0), (0, 0), (0, pad), (0, 0)]) for a in arrays)
    carry = carry.replace(cache=carry.cache.replace(k=grow(carry.cache.k), v=grow(carry.cache.v)))
  eos = model.eos_id
  (tokens, count, carry, rows), c, d_s = compile_and_run(
      decode_jit, (model.params, carry, sample_key, jnp.float32(temperature), jnp.float32(top_p)),
      dict(decoder=model.decoder, cfg=attractor, length=max_new_tokens, eos_id=eos))
  generated = np.asarray(tokens)[: int(count)].tolist()
  all_tokens = np.asarray(run["tokens"]).tolist()
  final = None if carry.state is None else jax.tree.map(lambda a: a[0], carry.state)
  check_finite(rows, len(generated), final)
  return Generation(
      text=model.tokenizer.decode(generated) if model.tokenizer is not None else "",
      tokens=generated, prompt_tokens=all_tokens, carry=carry, state=final,
      sample_key=np.asarray(run["sample_key"]), trace=None,
      timing={"compile_s": c, "prefill_s": 0.0, "decode_s": d_s,
              "tokens_per_s": len(generated) / max(d_s, 1e-9)})
