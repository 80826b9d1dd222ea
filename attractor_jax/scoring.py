"""Perplexity of text in non-overlapping windows (each scored on its own; BOS first when the
model wants it, never scored), with and without a memory."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from attractor_jax import forcing, stats
from attractor_jax.errors import InputError
from attractor_jax.memories.base import Memory
from attractor_jax.model import Model
from attractor_jax.prompts import bos, text_ids
from attractor_jax.seeds import stacked_keys
from attractor_jax.validation import check_int

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


def window_nll(model: Model, windows_WxL: np.ndarray) -> np.ndarray:
  """Summed next-token NLL of each window (L-1 predictions each), float64 [W]."""
  engine, out = model.engine(), []
  for i in range(0, len(windows_WxL), _WINDOWS_PER_CALL):
    chunk = windows_WxL[i:i + _WINDOWS_PER_CALL]
    pad = _WINDOWS_PER_CALL - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
    out.append(np.asarray(forcing.window_nll(engine, model.params, jnp.asarray(padded)),
                          np.float64)[: len(chunk)])
  return np.concatenate(out)


def stepwise_nll(model: Model, windows_WxL: np.ndarray, memory: Memory,
                 seeds: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """`forcing.stepwise_nll` for seeds 0..seeds-1: NLL sums, float64 [seeds, W], and the
  memory's activity per window ({name: [seeds, W]}, `Memory.activity`).

  A memory that wants the prompt's attention outputs gets the first window's.
  """
  prompt_attn = None
  if memory.uses_prompt:
    prompt_attn = model.taps(windows_WxL[:1], memory=memory).attn_out[0]
  init_keys, _ = stacked_keys(range(seeds))
  nll, activity = forcing.stepwise_nll(model.engine(memory), model.params,
                                       jnp.asarray(windows_WxL), init_keys, prompt_attn)
  return np.asarray(nll, np.float64), {k: np.asarray(v, np.float64) for k, v in activity.items()}


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
  activity: dict[str, float] | None = None  # the memory's activity, averaged over passes
  # (`Memory.activity`: the attractor's gate_open)

  def to_json(self) -> dict:
    """The fields that are set, the activity's numbers among them (e.g. "gate_open")."""
    out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
    activity = out.pop("activity", {})
    return {**out, **activity}


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
  base_W = window_nll(model, windows)
  predictions = windows.shape[0] * (window - 1)
  baseline = float(np.exp(base_W.sum() / predictions))
  out = Perplexity(ppl=baseline, ppl_ci95=[baseline, baseline], baseline_ppl=baseline,
                   delta_pct=0.0, delta_pct_ci95=[0.0, 0.0], tokens=int(windows.size),
                   windows=int(windows.shape[0]), window=window, seeds=0)
  if memory is None:
    return out
  memory.check_model(model.config)
  memory.check_task("scoring")
  nll_BxW, activity = stepwise_nll(model, windows, memory, seeds)
  ppl_B = np.exp(nll_BxW.sum(axis=1) / predictions)
  diff_W = (nll_BxW.mean(axis=0) - base_W) / (window - 1)
  lo, hi = stats.bootstrap_ci(diff_W) if len(diff_W) > 1 else (diff_W[0], diff_W[0])
  return dataclasses.replace(
      out, ppl=float(ppl_B.mean()), ppl_ci95=list(stats.bootstrap_ci(ppl_B)) if seeds > 1
      else [float(ppl_B[0])] * 2, seeds=int(seeds),
      delta_pct=float(100 * (ppl_B.mean() / baseline - 1)),
      delta_pct_ci95=[float(100 * np.expm1(lo)), float(100 * np.expm1(hi))],
      p_value=float(stats.sign_flip_pvalue(diff_W)), per_seed_ppl=ppl_B.tolist(),
      window_nll_baseline=base_W.tolist(), window_nll=nll_BxW.mean(axis=0).tolist(),
      activity={name: float(v.mean()) for name, v in activity.items()} or None)
