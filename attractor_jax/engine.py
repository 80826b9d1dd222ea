"""One frozen engine per (model config, memory, dtype): the pass, and every compiled program.

    engine = model.engine(memory)            # or Engine(config, memory, dtype)
    out = engine.step(params, tokens_BxT, positions_BxT, cache, state)   # -> Step

An engine's fields are static and hashable, and its programs are jitted with the engine as
a static `self`: a program compiles once per engine and input shape, and no caller lists
static arguments. Everything that changes (params, tokens, the KV cache, the memory state,
keys, token counts) goes in as arrays and comes back. Inside a pass the memory state has the
decoder's batch axis B; seeds and items are vmap axes around it (README: Architecture).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from attractor_jax.config import ModelConfig
from attractor_jax.memories.base import Memory, Observation, gate_open, residual_norm
from attractor_jax.sampling import SamplingState, Trace, sample_token, sample_tokens, state_finite
from attractor_jax.transformer import Decoder, KVCache, Taps, init_cache


class Step(NamedTuple):
  """One pass for a batch: what `Engine.step` returns."""

  logits: jax.Array  # [B, T, V] float32 ([B, 1, V] with last_logits_only)
  cache: KVCache | None
  state: Any  # the memory state after the pass, [B, ...]; None without a memory
  info: Any  # what the memory's update saw, [B, ...]; None without a memory
  taps: Taps
  feedback_ratio: Any = None  # [B]: |feedback this pass received| / the host layer's residual
  # norm (`memories.base.residual_norm`); None without a memory


class Forced(NamedTuple):
  """Rows read token by token under teacher forcing (`Engine.teacher_forced`)."""

  nll: jax.Array  # [R, L-1]: -log p(token t+1 | tokens ..t), as the memory left the model
  info: Any  # the memory's update info per pass, [R, L, ...]; None without a memory
  feedback_ratio: jax.Array  # [R, L]: |feedback the pass received| / its residual norm
  finite: jax.Array  # [R]: no NaN or Inf in any pass's logits or the final memory state
  candidate_logprob: jax.Array | None  # [R, L, C]: log p(candidate c | tokens ..t); None unasked


class Pass(NamedTuple):
  """A public read of one pass (`Model.taps`)."""

  logits: jax.Array  # [B, T, V] float32
  attn_out: jax.Array  # [B, T, D]: the host layer's attention output (before the residual add)
  hidden: jax.Array  # [B, T, D]: the final normed hidden states (the unembedding's input)


def open_share(info):
  """The first row's share of banks with the gate open in one pass (`gate_open`); NaN for a
  memory without a gate."""
  gate = getattr(info, "gate", None)
  return jnp.float32(jnp.nan) if gate is None else jnp.mean(gate_open(gate[0]))


def token_logp(logits_xV):
  """Log-probabilities over the vocabulary (last axis), in float32."""
  return jax.nn.log_softmax(logits_xV.astype(jnp.float32), axis=-1)


def token_nll(logits_BxTxV, targets_BxT):
  """-log p(target) per position, in float32."""
  return -jnp.take_along_axis(token_logp(logits_BxTxV), targets_BxT[..., None], axis=-1)[..., 0]


@dataclasses.dataclass(frozen=True)
class Engine:
  """The decoder of `config` with `memory` on its host layer (None: the plain model).

  `output_kernel`: the logits read params["lm_head"] even when the embeddings are tied (see
  `transformer.Decoder`).
  """

  config: ModelConfig
  memory: Memory | None = None
  dtype: Any = jnp.float32
  output_kernel: bool = False

  def __post_init__(self):
    if self.memory is not None:
      self.memory.check_model(self.config)

  @property
  def decoder(self) -> Decoder:
    return Decoder(self.config, dtype=self.dtype, output_kernel=self.output_kernel)

  @property
  def silent_start(self) -> bool:
    """A fresh state adds nothing to the prompt's pass (no memory, or `Memory.starts_silent`)."""
    return self.memory is None or self.memory.starts_silent

  def step(self, params, tokens_BxT, positions_BxT, cache: KVCache | None, state, *,
           last_logits_only: bool = False) -> Step:
    """One pass: the host layer adds the memory's feedback, the memory reads the pass (mixing
    memories change its logits), then updates its state for the next pass.

    Args:
      tokens_BxT, positions_BxT: int32 ids and their positions.
      cache: the KV cache, or None for plain causal attention over the pass alone.
      state: the memory state with a leading batch axis (None without a memory).
      last_logits_only: return the last position's logits only ([B, 1, V]); the other rows
        are then not unembedded unless the memory uses logits.
    """
    feedback_BxD = None if self.memory is None else jax.vmap(self.memory.feedback)(state)
    passed = self._pass(params, tokens_BxT, positions_BxT, cache, feedback_BxD, last_logits_only)
    return self._remember(params, tokens_BxT, positions_BxT, passed, state, feedback_BxD,
                          last_logits_only)

  def _pass(self, params, tokens_BxT, positions_BxT, cache, feedback_BxD, last_logits_only):
    """The decoder's pass, `feedback_BxD` entering at the memory's host layer (None: zero):
    (logits, cache, Taps)."""
    memory = self.memory
    if memory is None:
      return self.decoder.apply({"params": params}, tokens_BxT, positions_BxT, cache,
                                last_logits_only=last_logits_only, method=Decoder.tapped)
    return self.decoder.apply(
        {"params": params}, tokens_BxT, positions_BxT, cache, feedback_BxD=feedback_BxD,
        host_layer=memory.host_layer(self.config), closed_loop=memory.loop == "closed",
        last_logits_only=last_logits_only and not memory.uses_logits, method=Decoder.tapped)

  def _remember(self, params, tokens_BxT, positions_BxT, passed, state, feedback_BxD,
                last_logits_only) -> Step:
    """The memory's half of `step`: it reads the pass `passed` (mixing memories change its
    logits) and updates `state` for the next pass."""
    logits, cache, taps = passed
    memory = self.memory
    if memory is None:
      return Step(logits, cache, state, None, taps)
    obs = Observation(tokens=tokens_BxT, positions=positions_BxT, attn_out=taps.attn_out_BxTxD,
                      residual=taps.residual_BxTxD, hidden=taps.hidden_BxTxD, logits=logits)
    per_sequence = functools.partial(jax.vmap, in_axes=(0, 0, None))
    logits = per_sequence(memory.read)(state, obs, params)
    state, info = per_sequence(memory.observe)(state, obs, params)
    ratio_B = _norm_ratio(feedback_BxD, taps.residual_BxTxD)
    return Step(logits[:, -1:] if last_logits_only else logits, cache, state, info, taps, ratio_B)

  def fresh_state(self, params, prompt_T, key, prompt_attn_TxD=None):
    """A fresh memory state for one sequence (no batch axis; None without a memory). A memory
    that wants them sees the prompt's attention outputs: `prompt_attn_TxD`, or those of a
    baseline pass."""
    memory = self.memory
    if memory is None:
      return None
    if not memory.uses_prompt:
      return memory.fresh_state(self.config, key)
    if prompt_attn_TxD is None:
      _, _, taps = self.decoder.apply({"params": params}, prompt_T[None], _positions(prompt_T),
                                      method=Decoder.tapped,
                                      host_layer=memory.host_layer(self.config))
      prompt_attn_TxD = taps.attn_out_BxTxD[0]
    return memory.fresh_state(self.config, key, prompt_attn_TxD)

  @functools.partial(jax.jit, static_argnames=("self",))
  def forward(self, params, tokens_BxT):
    """Logits [B, T, V] of one plain causal pass (no memory, no cache)."""
    positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    logits, _ = self.decoder.apply({"params": params}, tokens_BxT, positions)
    return logits

  @functools.partial(jax.jit, static_argnames=("self", "layer"))
  def taps(self, params, tokens_BxT, state=None, *, layer: int) -> Pass:
    """One causal pass tapping `layer`; with a memory state, its feedback enters there."""
    positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    feedback = None if state is None else jax.vmap(self.memory.feedback)(state)
    closed = state is not None and self.memory.loop == "closed"
    logits, _, taps = self.decoder.apply({"params": params}, tokens_BxT, positions,
                                         feedback_BxD=feedback, host_layer=layer,
                                         closed_loop=closed, method=Decoder.tapped)
    return Pass(logits, taps.attn_out_BxTxD, taps.hidden_BxTxD)

  @functools.partial(jax.jit, static_argnames=("self",))
  def window_nll(self, params, tokens_BxW):
    """Summed next-token NLL of each row (W-1 predictions), one plain pass: [B]."""
    logits = self.forward(params, tokens_BxW)
    return token_nll(logits[:, :-1], tokens_BxW[:, 1:]).sum(axis=-1)

  @functools.partial(jax.jit, static_argnames=("self", "cache_len", "buffer"))
  def prefill(self, params, prompt_T, init_key, sample_key, temperature, top_p, eos_id,
              state=None, *, cache_len: int, buffer: int) -> SamplingState:
    """`_prefill` for one sequence (see there); the result has no row axis."""
    return self._prefill(params, prompt_T, init_key, sample_key, temperature, top_p, eos_id,
                         state, cache_len, buffer)

  @functools.partial(jax.jit, static_argnames=("self",), donate_argnames=("state",))
  def decode(self, params, state: SamplingState, sample_keys_S, num_tokens, temperature, top_p,
             eos_id) -> SamplingState:
    """`_decode` as its own program (the state's buffers are donated)."""
    return self._decode(params, state, sample_keys_S, num_tokens, temperature, top_p, eos_id)

  @functools.partial(jax.jit, static_argnames=("self", "cache_len", "buffer", "keep_cache",
                                                "shared_prompt"))
  def sample(self, params, prompts_SxT, init_keys_S, sample_keys_S, num_tokens, temperature,
             top_p, eos_id, *, cache_len: int, buffer: int, keep_cache: bool = False,
             shared_prompt: bool = False) -> SamplingState:
    """Rows of (prompt, seed keys), prompts of one length: each row's prefill, then one decode
    loop for all rows, in phases that read only the written slots (`_decode`).

    `shared_prompt` promises that every row's prompt is row 0's (the other rows' prompts are
    not read): with a `silent_start` the prompt's pass then runs once and every row starts
    from it. The result's cache is dropped (a sweep does not resume) unless `keep_cache` (to
    read more tokens after the runs: `extend`)."""
    if shared_prompt and self.silent_start:
      prompt_T = prompts_SxT[0]
      passed = self._prompt_pass(params, prompt_T, None, cache_len)
      first = lambda ik, sk: self._first_token(params, prompt_T, passed, None, ik, sk,
                                               temperature, top_p, eos_id, None, buffer)
      state = jax.vmap(first)(init_keys_S, sample_keys_S)
    else:
      prefill = functools.partial(self._prefill, params, temperature=temperature, top_p=top_p,
                                  eos_id=eos_id, state=None, cache_len=cache_len, buffer=buffer)
      state = jax.vmap(prefill)(prompts_SxT, init_keys_S, sample_keys_S)
    state = self._decode(params, state, sample_keys_S, num_tokens, temperature, top_p, eos_id,
                         phases_from=prompts_SxT.shape[1])
    return state if keep_cache else state.replace(cache=None)

  @functools.partial(jax.jit, static_argnames=("self",))
  def extend(self, params, runs: SamplingState, tokens_SxJ, read_at_S):
    """Teacher-forces each row's last sampled token, then its `tokens`, after its run (its
    cache and memory carried on, one pass per token); returns the log-probs [S, V] of what
    follows sequence index `read_at` (0 is the last sampled token, j the tokens' j-th)."""
    def one_row(token, position, cache, memory, tokens_J, read_at):
      seq_1xJ = jnp.concatenate([token[None], tokens_J])[None]
      keep = lambda out, j, kept_V: (jnp.where(j == read_at, out.logits[0, -1], kept_V), None)
      _, _, logits_V, _ = self._token_by_token(
          params, seq_1xJ, position[None], cache, memory,
          jnp.zeros((self.config.vocab_size,), jnp.float32), keep)
      return jax.nn.log_softmax(logits_V)

    return jax.vmap(one_row)(runs.token, runs.position, runs.cache, runs.memory, tokens_SxJ,
                             read_at_S)

  def _token_by_token(self, params, tokens_BxJ, start_B, cache, state, carry, emit):
    """Reads `tokens_BxJ` one pass per token (row b's token j at position start_B[b] + j) from
    `cache` and memory `state`, both carried on. `emit(out, j, carry) -> (carry, output)` keeps
    what the caller needs of each pass's `Step`. Returns the final cache, state and carry, and
    the outputs stacked over j."""

    def one_token(c, j):
      cache, state, carry = c
      out = self.step(params, tokens_BxJ[:, j][:, None], (start_B + j)[:, None], cache, state,
                      last_logits_only=True)
      carry, output = emit(out, j, carry)
      return (out.cache, out.state, carry), output

    (cache, state, carry), outputs = jax.lax.scan(one_token, (cache, state, carry),
                                                  jnp.arange(tokens_BxJ.shape[1]))
    return cache, state, carry, outputs

  def _prefill(self, params, prompt_T, init_key, sample_key, temperature, top_p, eos_id, state,
               cache_len: int, buffer: int) -> SamplingState:
    """Runs the prompt as one pass and samples token 0 into `buffer`-token output buffers.

    `state=None` starts a fresh memory: with a `silent_start`, from this pass's attention
    outputs (the pass is the baseline's); otherwise from a baseline pass of its own, and its
    feedback enters this pass. A given state (batch axis 1) feeds its feedback into the prompt.
    """
    if state is None and not self.silent_start:
      state = jax.tree.map(lambda a: a[None], self.fresh_state(params, prompt_T, init_key))
    feedback = None if state is None else jax.vmap(self.memory.feedback)(state)
    passed = self._prompt_pass(params, prompt_T, feedback, cache_len)
    return self._first_token(params, prompt_T, passed, feedback, init_key, sample_key,
                             temperature, top_p, eos_id, state, buffer)

  def _prompt_pass(self, params, prompt_T, feedback_1xD, cache_len: int):
    """The prompt's pass into a fresh `cache_len`-slot cache, `feedback_1xD` (None: none)
    entering at the host layer: (logits of the last position, cache, Taps)."""
    cache = init_cache(self.config, 1, cache_len, self.dtype)
    return self._pass(params, prompt_T[None], _positions(prompt_T), cache, feedback_1xD,
                      last_logits_only=True)

  def _first_token(self, params, prompt_T, passed, feedback_1xD, init_key, sample_key,
                   temperature, top_p, eos_id, state, buffer: int) -> SamplingState:
    """`_prefill` after the prompt's pass `passed`, which received `feedback_1xD`: the memory
    (`state`, or with a `silent_start` a fresh one from the pass's attention outputs) reads
    it, and token 0 is sampled."""
    T = prompt_T.shape[0]
    if self.memory is not None and state is None:
      assert self.silent_start, "a fresh state that feeds back needs its own prompt pass"
      state = jax.tree.map(lambda a: a[None], self.fresh_state(
          params, prompt_T, init_key, passed[2].attn_out_BxTxD[0]))
    out = self._remember(params, prompt_T[None], _positions(prompt_T), passed, state,
                         feedback_1xD, last_logits_only=True)
    token = sample_token(out.logits[0, -1], jax.random.fold_in(sample_key, 0), temperature, top_p)
    first = lambda r: jnp.zeros((buffer, *r.shape), r.dtype).at[0].set(r)
    return SamplingState(
        tokens=first(token), count=jnp.int32(1), trace=jax.tree.map(first, self._trace_row(out)),
        token=token, position=jnp.int32(T), t=jnp.int32(1), done=token == eos_id,
        cache=out.cache, memory=out.state)

  def _decode(self, params, state: SamplingState, sample_keys_S, num_tokens, temperature, top_p,
              eos_id, phases_from: int | None = None) -> SamplingState:
    """Samples until every row is done (EOS) or has `num_tokens` tokens, one pass per token.

    All rows sit at one position. A finished row's tokens, count, memory and trace stop,
    while its cache goes on being written (it is never read again): a `jax.vmap` of a
    one-row loop would select between the old and new cache of every row in every step, and
    per-row positions would make every cache write a scatter.

    `phases_from` (the first position decoded, static; None: one loop): the loop runs in
    phases over the cache's first 128, 256, 512, ... slots above it (`read_bounds`),
    attention reading only the phase's slots, so a row's attention costs the slots written so
    far (rounded up), not the whole cache. Each phase compiles the pass once more: worth it
    for many rows (`sample`), where attention is a large share.
    """
    advance = jax.vmap(functools.partial(self._advance, params), in_axes=(0, None))
    S = state.done.shape[0]

    def going(s: SamplingState):
      return jnp.any(~s.done & (s.count < num_tokens))

    def one_token(s: SamplingState) -> SamplingState:
      slot = jnp.max(s.count)  # every row still going has written this many tokens
      logits_SxV, cache, memory, row = advance(s, s.position[0])
      token = sample_tokens(logits_SxV, jax.vmap(jax.random.fold_in)(sample_keys_S, s.t),
                            temperature, top_p)
      live_S = ~s.done
      keep = lambda new, old: jnp.where(live_S.reshape((S,) + (1,) * (new.ndim - 1)), new, old)
      token = jnp.where(live_S, token, eos_id)
      trace = jax.tree.map(lambda buf, r: buf.at[:, slot].set(keep(r, buf[:, slot])), s.trace, row)
      return SamplingState(
          tokens=s.tokens.at[:, slot].set(token), count=s.count + live_S, trace=trace,
          token=token, position=s.position + 1, t=s.t + live_S, done=s.done | (token == eos_id),
          cache=cache, memory=jax.tree.map(keep, memory, s.memory))

    if phases_from is None:
      return jax.lax.while_loop(going, one_token, state)
    for bound in read_bounds(state.cache.max_len, above=phases_from):
      inside = lambda s, bound=bound: going(s) & (s.position[0] < bound)
      state = _on_first_slots(state, bound, lambda s: jax.lax.while_loop(inside, one_token, s))
    return state

  def _advance(self, params, s: SamplingState, position):
    """One pass of one row at `position`: (logits [V], cache, memory state, Trace row)."""
    out = self.step(params, s.token[None, None], position[None, None], s.cache, s.memory)
    return out.logits[0, -1], out.cache, out.state, self._trace_row(out)

  def _trace_row(self, out: Step) -> Trace:
    hidden = out.taps.hidden_BxTxD[0, -1]
    finite = jnp.all(jnp.isfinite(out.logits))
    if out.info is None:
      return Trace(hidden=hidden, finite=finite)
    first = lambda tree: jax.tree.map(lambda a: a[0], tree)
    return Trace(hidden=hidden, info=first(out.info), finite=finite & state_finite(out.state),
                 feedback_ratio=out.feedback_ratio[0])

  def trace_row_shape(self, params) -> Trace:
    """The shapes and dtypes of one Trace row (one pass of one sequence)."""

    def one_pass(params):
      state = None
      if self.memory is not None:
        prompt = jnp.zeros((1, self.config.width), jnp.float32)
        state = jax.tree.map(lambda a: a[None], self.memory.fresh_state(
            self.config, jax.random.key(0), prompt))
      token = jnp.zeros((1, 1), jnp.int32)
      out = self.step(params, token, token, init_cache(self.config, 1, 1, self.dtype), state)
      return self._trace_row(out)

    return jax.eval_shape(one_pass, params)

  def with_buffers(self, params, state: SamplingState, buffer: int) -> SamplingState:
    """`state` (rows that go on, e.g. a restored run) with empty `buffer`-token outputs."""
    S = state.done.shape[0]
    return state.replace(
        tokens=jnp.zeros((S, buffer), jnp.int32), count=jnp.zeros((S,), jnp.int32),
        trace=jax.tree.map(lambda r: jnp.zeros((S, buffer, *r.shape), r.dtype),
                           self.trace_row_shape(params)))

  @functools.partial(jax.jit, static_argnames=("self",))
  def stepwise_nll(self, params, windows_NxW, init_keys_S, prompt_attn_TxD, ref_logp_NxWxV=None):
    """Scores windows token by token with the memory on, for S seeds at once.

    Each pass is one token, as in generation; the KV cache restarts at every window while the
    memory's state carries over (the persistent memory under test). Returns NLL sums [S, N],
    KL(reference || memory) sums [S, N] (zeros without reference log-probs, the baseline's),
    and the share of each window's W passes whose gate was open [S, N] (`gate_open`; NaN for
    memories without a gate).
    """
    W = windows_NxW.shape[1]

    def one_window(state, window):
      window_W, ref_WxV = window

      def score(out, pos, _):
        target = window_W[jnp.minimum(pos + 1, W - 1)]
        scored = pos < W - 1
        nll = jnp.where(scored, token_nll(out.logits[:, -1], target[None])[0], 0.0)
        opened = open_share(out.info)
        if ref_WxV is None:
          return None, (nll, 0.0, opened)
        logp_V = jax.nn.log_softmax(out.logits[0, -1])
        kl = jnp.sum(jnp.exp(ref_WxV[pos]) * (ref_WxV[pos] - logp_V))
        return None, (nll, jnp.where(scored, kl, 0.0), opened)

      cache = init_cache(self.config, 1, W, self.dtype)
      _, state, _, (nll_W, kl_W, opened_W) = self._token_by_token(
          params, window_W[None], jnp.zeros((1,), jnp.int32), cache, state, None, score)
      return state, (nll_W.sum(), jnp.sum(kl_W), jnp.mean(opened_W))

    def one_seed(key):
      fresh = self.memory.fresh_state(self.config, key, prompt_attn_TxD)
      _, out_N = jax.lax.scan(one_window, jax.tree.map(lambda a: a[None], fresh),
                              (windows_NxW, ref_logp_NxWxV))
      return out_N

    return jax.vmap(one_seed)(init_keys_S)

  @functools.partial(jax.jit, static_argnames=("self", "prompt_len"))
  def teacher_forced(self, params, tokens_RxL, init_keys_R, candidates_C=None, *,
                     prompt_len: int) -> Forced:
    """Reads each row token by token, one pass per token as in generation, each with a fresh
    memory (initialised from its first `prompt_len` tokens' attention outputs), and scores
    every next token. Rows are the decoder's batch axis: R rows cost one batched pass per token.
    With `candidates_C` (token ids), also every position's log-probability of each candidate:
    a multiple-choice answer scored from one row instead of one row per choice.
    """
    R, L = tokens_RxL.shape
    fresh = lambda row_L, key: self.fresh_state(params, row_L[:prompt_len], key)
    state = jax.vmap(fresh)(tokens_RxL, init_keys_R)

    def score(out, pos, _):
      target = tokens_RxL[:, jnp.minimum(pos + 1, L - 1)]
      logp_RxV = token_logp(out.logits[:, -1])
      nll = -jnp.take_along_axis(logp_RxV, target[:, None], axis=-1)[:, 0]
      finite = jnp.all(jnp.isfinite(out.logits), axis=(1, 2))
      ratio = jnp.zeros((R,)) if out.feedback_ratio is None else out.feedback_ratio
      candidates = None if candidates_C is None else logp_RxV[:, candidates_C]
      return None, (nll, out.info, ratio, finite, candidates)

    cache = init_cache(self.config, R, L, self.dtype)
    _, state, _, (nll, info, ratio, finite, candidates) = self._token_by_token(
        params, tokens_RxL, jnp.zeros((R,), jnp.int32), cache, state, None, score)
    rows_first = lambda tree: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)
    finite_R = jnp.all(finite, axis=0)
    if state is not None:
      finite_R &= jax.vmap(state_finite)(state)
    return Forced(nll=nll.T[:, :-1], info=rows_first(info), feedback_ratio=ratio.T,
                  finite=finite_R, candidate_logprob=rows_first(candidates))

  @functools.partial(jax.jit, static_argnames=("self", "segment"))
  def choice_scores(self, params, ctx_IxL, ch_IxCxJ, mask_IxCxJ, keys_S, *, segment: int):
    """Per seed, item and choice: the summed log-probability of the choice's tokens and
    whether each is the argmax, [S, I, C] each; per seed and item, the share of context
    passes whose gate was open (`gate_open` over banks; NaN for memories without a gate),
    [S, I]. The context is read in `segment`-token passes from a fresh memory; each choice is
    then one more pass from that cache and state.
    """
    L, J = ctx_IxL.shape[1], ch_IxCxJ.shape[2]

    def one_item(key, ctx_L, ch_CxJ, mask_CxJ):
      state = None
      if self.memory is not None:
        state = jax.tree.map(lambda a: a[None], self.fresh_state(params, ctx_L, key))
      cache = init_cache(self.config, 1, L + J, self.dtype)

      def read(carry, start):
        cache, state, _ = carry
        toks = jax.lax.dynamic_slice(ctx_L, (start,), (segment,))[None]
        out = self.step(params, toks, (start + jnp.arange(segment))[None], cache, state,
                        last_logits_only=True)
        opened = open_share(out.info)
        return (out.cache, out.state, out.logits[0, -1]), opened

      (cache, state, last_V), opened_P = jax.lax.scan(
          read, (cache, state, jnp.zeros((self.config.vocab_size,), jnp.float32)),
          jnp.arange(0, L, segment))

      def score(ch_J, mask_J):
        logits = self.step(params, ch_J[None], (L + jnp.arange(J))[None], cache, state).logits
        logp_JxV = jax.nn.log_softmax(jnp.concatenate([last_V[None], logits[0, :-1]]), axis=-1)
        picked_J = jnp.take_along_axis(logp_JxV, ch_J[:, None], 1)[:, 0]
        greedy = jnp.all(jnp.where(mask_J, jnp.argmax(logp_JxV, axis=-1) == ch_J, True))
        return jnp.sum(jnp.where(mask_J, picked_J, 0.0)), greedy

      return (*jax.vmap(score)(ch_CxJ, mask_CxJ), jnp.mean(opened_P))

    per_seed = lambda key: jax.vmap(one_item, in_axes=(None, 0, 0, 0))(key, ctx_IxL, ch_IxCxJ,
                                                                          mask_IxCxJ)
    return jax.vmap(per_seed)(keys_S)


def read_bounds(slots: int, above: int = 0, first: int = 128) -> list[int]:
  """The decode phases' slot counts: `first`, doubling, below `slots`, then `slots`; only
  those above `above` (the first position decoded: a phase below it would never run)."""
  bounds = [first]
  while bounds[-1] * 2 < slots:
    bounds.append(bounds[-1] * 2)
  return [b for b in bounds if above < b < slots] + [slots]


def _positions(tokens_T):
  return jnp.arange(tokens_T.shape[0], dtype=jnp.int32)[None]


def _on_first_slots(state: SamplingState, bound: int, run) -> SamplingState:
  """`run(state)` with the cache cut to its first `bound` slots (a copy), then written back."""
  cache = state.cache
  if bound == cache.max_len:
    return run(state)
  out = run(state.replace(cache=jax.tree.map(lambda c: c[..., :bound, :], cache)))
  back = lambda c, part: jax.lax.dynamic_update_slice_in_dim(c, part, 0, axis=c.ndim - 2)
  return out.replace(cache=jax.tree.map(back, cache, out.cache))


def _norm_ratio(feedback_BxD, residual_BxTxD):
  """|feedback| / residual_norm(residual) per row (0 where the feedback is 0 or None)."""
  if feedback_BxD is None:
    return jnp.zeros(residual_BxTxD.shape[:1], jnp.float32)
  fb = jnp.linalg.norm(feedback_BxD.astype(jnp.float32), axis=-1)
  return fb / jnp.maximum(jax.vmap(residual_norm)(residual_BxTxD), 1e-30)
