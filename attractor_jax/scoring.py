"""Perplexity of text in non-overlapping windows (each window scored on its own, no BOS)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.model import Model
from attractor_jax.transformer import Decoder

_WINDOWS_PER_CALL = 4


def text_windows(model: Model, text: str, window: int, max_tokens: int | None) -> np.ndarray:
  """Tokenizes `text` and cuts it into full windows: int32 [n_windows, window]."""
  if not isinstance(text, str) or not text.strip():
    raise InputError("the text to score is empty: pass non-empty text")
  if not 2 <= window <= model.config.max_len:
    raise InputError(f"window={window} must be in [2, {model.config.max_len}] (the model's context)")
  if max_tokens is not None and max_tokens < window:
    raise InputError(f"max_tokens={max_tokens} is smaller than window={window}")
  ids = np.asarray(model.tokenizer.encode(text), np.int32)
  if max_tokens is not None:
    ids = ids[:max_tokens]
  n = len(ids) // window
  if n == 0:
    raise InputError(f"the text has {len(ids)} tokens, fewer than one window of {window}: "
                     "pass more text or a smaller --window")
  return ids[: n * window].reshape(n, window)


def window_nll(model: Model, windows_NxW: np.ndarray) -> np.ndarray:
  """Summed next-token NLL of each window (W-1 predictions each), float64 [n_windows]."""
  out = []
  for i in range(0, len(windows_NxW), _WINDOWS_PER_CALL):
    chunk = windows_NxW[i:i + _WINDOWS_PER_CALL]
    pad = _WINDOWS_PER_CALL - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
    nll = _nll_full(model.params, jnp.asarray(padded), decoder=model.decoder)
    out.append(np.asarray(nll, np.float64)[: len(chunk)])
  return np.concatenate(out)


@functools.partial(jax.jit, static_argnames=("decoder",))
def _nll_full(params, tokens_BxW, *, decoder: Decoder):
  positions = jnp.broadcast_to(jnp.arange(tokens_BxW.shape[1]), tokens_BxW.shape)
  logits, _ = decoder.apply({"params": params}, tokens_BxW, positions)
  return token_nll(logits[:, :-1], tokens_BxW[:, 1:]).sum(axis=-1)


def token_nll(logits_BxTxV, targets_BxT):
  """-log p(target) per position, in float32."""
  logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets_BxT[..., None], axis=-1)[..., 0]


def perplexity(model: Model, text: str, window: int = 512, max_tokens: int | None = None) -> dict:
  """Perplexity of `text`: exp(total NLL / predictions) over non-overlapping windows.

  Returns {"ppl", "tokens", "windows", "window_nll"} (per-window NLL sums, for paired stats).
  """
  windows = text_windows(model, text, window, max_tokens)
  nll = window_nll(model, windows)
  predictions = windows.shape[0] * (window - 1)
  return {"ppl": float(np.exp(nll.sum() / predictions)), "tokens": int(windows.size),
          "windows": int(windows.shape[0]), "window_nll": nll.tolist()}
