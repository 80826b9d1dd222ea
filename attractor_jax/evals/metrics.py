"""Repetition, drift and snap-back metrics of one generated continuation.

Pure NumPy functions of token ids [T] or hidden states [T, D]. Windowed metrics use
non-overlapping windows of `window` positions and drop an incomplete last one.
Shape suffixes: T positions, D hidden width, W windows, M n-grams.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attractor_jax.errors import InputError


def _tokens(tokens: Any) -> np.ndarray:
  t_T = np.asarray(tokens)
  if t_T.ndim != 1:
    raise InputError(f"tokens must be 1-D, got shape {t_T.shape}")
  return t_T


def _check_positive(**kw: int) -> None:
  for name, value in kw.items():
    if value < 1:
      raise InputError(f"{name}={value} must be >= 1")


def _ngrams(t_T: np.ndarray, n: int) -> np.ndarray:
  """[M, n] n-grams of t_T, M = max(T - n + 1, 0)."""
  if t_T.size < n:
    return np.empty((0, n), dtype=t_T.dtype)
  return np.lib.stride_tricks.sliding_window_view(t_T, n)


def distinct_n(tokens: Any, n: int) -> float:
  """distinct-n = unique n-grams / total n-grams (0.0 when there is no n-gram)."""
  _check_positive(n=n)
  grams = _ngrams(_tokens(tokens), n)
  if len(grams) == 0:
    return 0.0
  return len(np.unique(grams, axis=0)) / len(grams)


def seq_rep_n(tokens: Any, n: int = 4) -> float:
  """seq-rep-n = 1 - unique n-grams / total n-grams (0.0 when fewer than n tokens)."""
  _check_positive(n=n)
  t_T = _tokens(tokens)
  if t_T.size < n:
    return 0.0
  return 1.0 - distinct_n(t_T, n)


def rep_l(tokens: Any, l: int = 128) -> float:  # noqa: E741 (the metric is called rep/l)
  """rep/l = share of positions i >= 1 with tokens[i] in tokens[max(0, i - l):i].

  Returns 0.0 when there are fewer than 2 tokens.
  """
  _check_positive(l=l)
  t_T = _tokens(tokens)
  if t_T.size < 2:
    return 0.0
  last_seen: dict[Any, int] = {}
  hits = 0
  for i, tok in enumerate(t_T.tolist()):
    if i - last_seen.get(tok, -l - 1) <= l:
      hits += 1
    last_seen[tok] = i
  return hits / (t_T.size - 1)


def _window_means(hidden_TxD: Any, window: int) -> np.ndarray:
  """[W, D] mean hidden state of each complete window."""
  _check_positive(window=window)
  h_TxD = np.asarray(hidden_TxD, dtype=np.float64)
  if h_TxD.ndim != 2:
    raise InputError(f"hidden must be [T, D], got shape {h_TxD.shape}")
  n_windows = h_TxD.shape[0] // window
  return h_TxD[:n_windows * window].reshape(n_windows, window, h_TxD.shape[1]).mean(axis=1)


def _cosine(x_WxD: np.ndarray, v_D: Any) -> np.ndarray:
  v_D = np.asarray(v_D, dtype=np.float64)
  if v_D.shape != x_WxD.shape[1:]:
    raise InputError(f"vector has shape {v_D.shape} but hidden width is {x_WxD.shape[1]}")
  return x_WxD @ v_D / (np.linalg.norm(x_WxD, axis=-1) * np.linalg.norm(v_D))


def window_drift(hidden_TxD: Any, prompt_vec_D: Any, window: int = 50) -> np.ndarray:
  """drift[w] = cos(mean of hidden over window w, prompt_vec), as an array [W]."""
  return _cosine(_window_means(hidden_TxD, window), prompt_vec_D)


def snap_back_share(
    hidden_TxD: Any, topic_a_D: Any, topic_b_D: Any, window: int = 50) -> float:
  """Share of windows w with cos(mean_w, topic_a) > cos(mean_w, topic_b); ties count as B.

  Raises InputError when there is no complete window.
  """
  means_WxD = _window_means(hidden_TxD, window)
  if len(means_WxD) == 0:
    raise InputError(f"hidden has fewer than window={window} positions")
  closer_to_a_W = _cosine(means_WxD, topic_a_D) > _cosine(means_WxD, topic_b_D)
  return float(closer_to_a_W.mean())


def repetition_by_position(tokens: Any, n: int = 4, window: int = 50) -> np.ndarray:
  """rep[w] = seq_rep_n(tokens[w * window:(w + 1) * window], n), as an array [W]."""
  _check_positive(window=window)
  t_T = _tokens(tokens)
  return np.array(
      [seq_rep_n(t_T[w * window:(w + 1) * window], n) for w in range(t_T.size // window)],
      dtype=np.float64)
