"""Perplexity of text in non-overlapping windows (each scored on its own; BOS first when the
model wants it, never scored), with and without a memory."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import stats
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.prompts import bos, text_ids
from attractor_jax.seeds import stacked_keys
from attractor_jax.validation import check_int, renamed_memory_keyword

_WINDOWS_PER_CALL = 4


def text_windows(model: Model, text: str, window: int, max_tokens: int | None) -> np.ndarray:
  """Tokenizes `text` (its first `max_tokens` tokens) and cuts it into full windows: int32
  [n_windows, window]. A model that wants BOS gets it at the start of every window (it is
  never scored: the window's other W - 1 tokens are)."""
  if not isinstance(text, str) or not text.strip():
    raise InputError("the text to score is empty: pass non-empty text")
  check_int("window", window, 2, model.config.max_len)
  if max_tokens is not None:
    check_int("max_tokens", max_tokens, window)
  start = bos(model)
  ids = np.asarray(text_ids(model, text), np.int32)[:max_tokens]
  body = window - len(start)
  n = len(ids) // body
  if n == 0:
    raise InputError(f"the text has {len(ids)} tokens, fewer than one window of {window}: "
                     "pass more text or a smaller --window")
  windows = ids[: n * body].reshape(n, body)
  return np.concatenate([np.full((n, len(start)), start, np.int32), windows], axis=1)


def window_nll(model: Model, windows_NxW: np.ndarray) -> np.ndarray:
  """Summed next-token NLL of each window (W-1 predictions each), float64 [n_windows]."""
  engine, out = model.engine(), []
  for i in range(0, len(windows_NxW), _WINDOWS_PER_CALL):
    chunk = windows_NxW[i:i + _WINDOWS_PER_CALL]
    pad = _WINDOWS_PER_CALL - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
    out.append(np.asarray(engine.window_nll(model.params, jnp.asarray(padded)),
                          np.float64)[: len(chunk)])
  return np.concatenate(out)


def baseline_logp(model: Model, windows_NxW: np.ndarray) -> jax.Array:
  """The baseline model's next-token log-probs of each window: [N, W, V]."""
  return jax.nn.log_softmax(model.logits(windows_NxW), axis=-1)


def stepwise_nll(model: Model, windows_NxW: np.ndarray, memory: Memory, seeds: int,
                 ref_logp_NxWxV=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`Engine.stepwise_nll` for seeds 0..seeds-1: NLL and KL sums and the share of passes with
  the gate open (NaN without a gate), float64 [S, N] each.

  A memory that wants the prompt's attention outputs gets the first window's.
  """
  prompt_attn = None
  if memory.uses_prompt:
    prompt_attn = model.taps(windows_NxW[:1], memory=memory).attn_out[0]
  init_keys, _ = stacked_keys(range(seeds))
  out = model.engine(memory).stepwise_nll(model.params, jnp.asarray(windows_NxW), init_keys,
                                          prompt_attn, ref_logp_NxWxV)
  return tuple(np.asarray(a, np.float64) for a in out)


@dataclasses.dataclass
class Perplexity:
  """Perplexity without a memory and, given one, with it (paired, window by window)."""

  ppl: float  # with the memory: the mean over seeds (the baseline's without one)
  ppl_ci95: list[float]  # over seeds
  baseline_ppl: float
  delta_pct: float  # % change of perplexity
  delta_pct_ci95: list[float]  # bootstrap over windows
  tokens: int
  windows: int
  window: int
  seeds: int  # 0 without a memory
  p_value: float | None = None  # sign-flip test over windows
  per_seed_ppl: list[float] | None = None
  window_nll_baseline: list[float] | None = None
  window_nll: list[float] | None = None  # mean over seeds
  gate_open: float | None = None  # share of passes with the gate open (memories with a gate)

  def to_json(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@renamed_memory_keyword
def perplexity(model: Model, text: str, window: int = 512, max_tokens: int | None = None, *,
               memory: Memory | None = None, seeds: int = 1) -> Perplexity:
  """Perplexity of `text` over non-overlapping windows (BOS as the tokenizer says), baseline and
  with a memory.

  Args:
    window: tokens per window; each window is scored on its own.
    max_tokens: score only the first `max_tokens` tokens.
    memory: scored token by token with this memory on, for `seeds` seeds in one vmapped
      call; its state carries over from window to window. None: the baseline only.
    seeds: seeds 0..seeds-1 (they vary the memory's initial state).
  Returns:
    Perplexity (the CLI's `ppl` JSON via `to_json()`).
  """
  check_int("seeds", seeds, 1)
  windows = text_windows(model, text, window, max_tokens)
  base_N = window_nll(model, windows)
  predictions = windows.shape[0] * (window - 1)
  baseline = float(np.exp(base_N.sum() / predictions))
  out = Perplexity(ppl=baseline, ppl_ci95=[baseline, baseline], baseline_ppl=baseline,
                   delta_pct=0.0, delta_pct_ci95=[0.0, 0.0], tokens=int(windows.size),
                   windows=int(windows.shape[0]), window=window, seeds=0)
  if memory is None:
    return out
  memory.check_model(model.config)
  if getattr(memory, "init", None) == "prompt":
    raise InputError("init='prompt' would copy scored tokens into the memory: use init='noise' "
                     "for perplexity")
  nll_SxN, _, opened_SxN = stepwise_nll(model, windows, memory, seeds)
  ppl_S = np.exp(nll_SxN.sum(axis=1) / predictions)
  diff_N = (nll_SxN.mean(axis=0) - base_N) / (window - 1)
  lo, hi = stats.bootstrap_ci(diff_N) if len(diff_N) > 1 else (diff_N[0], diff_N[0])
  return dataclasses.replace(
      out, ppl=float(ppl_S.mean()), ppl_ci95=list(stats.bootstrap_ci(ppl_S)) if seeds > 1
      else [float(ppl_S[0])] * 2, seeds=int(seeds),
      delta_pct=float(100 * (ppl_S.mean() / baseline - 1)),
      delta_pct_ci95=[float(100 * np.expm1(lo)), float(100 * np.expm1(hi))],
      p_value=float(stats.sign_flip_pvalue(diff_N)), per_seed_ppl=ppl_S.tolist(),
      window_nll_baseline=base_N.tolist(), window_nll=nll_SxN.mean(axis=0).tolist(),
      gate_open=None if np.isnan(opened_SxN).any() else float(opened_SxN.mean()))
