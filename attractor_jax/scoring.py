"""Perplexity of text in non-overlapping windows (each window scored on its own, no BOS)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.model import Model, full_forward
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
  logits = full_forward(params, tokens_BxW, decoder=decoder)
  return token_nll(logits[:, :-1], tokens_BxW[:, 1:]).sum(axis=-1)


def token_nll(logits_BxTxV, targets_BxT):
  """-log p(target) per position, in float32."""
  logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets_BxT[..., None], axis=-1)[..., 0]


def stepwise_window_nll(params, windows_NxW, init_keys_S, prompt_attn_TxD, ref_logp_NxWxV=None,
                        *, decoder: Decoder, cfg):
  """Scores windows token by token with the memory `cfg` on, for S seeds at once.

  Each pass is one token, as in generation; the KV cache restarts at every window while the
  memory's state carries over (the persistent memory under test). Returns NLL sums [S, N]
  and, given reference log-probs (the baseline's), KL(reference || layer) sums [S, N].
  """
  from attractor_jax.step import step
  from attractor_jax.transformer import init_cache

  W = windows_NxW.shape[1]

  def one_window(state, window):
    window_W, ref_WxV = window

    def one_token(carry, pos):
      cache, state = carry
      logits, cache, state = step(params, window_W[pos][None, None], pos[None, None], cache,
                                  state, decoder=decoder, cfg=cfg)
      target = window_W[jnp.minimum(pos + 1, W - 1)]
      scored = pos < W - 1
      nll = jnp.where(scored, token_nll(logits[:, -1], target[None])[0], 0.0)
      if ref_WxV is None:
        return (cache, state), (nll, 0.0)
      logp_V = jax.nn.log_softmax(logits[0, -1])
      kl = jnp.sum(jnp.exp(ref_WxV[pos]) * (ref_WxV[pos] - logp_V))
      return (cache, state), (nll, jnp.where(scored, kl, 0.0))

    cache = init_cache(decoder.config, 1, W, decoder.dtype)
    (_, state), (nll_W, kl_W) = jax.lax.scan(one_token, (cache, state), jnp.arange(W))
    return state, (nll_W.sum(), jnp.sum(kl_W))

  def one_seed(key):
    state = jax.tree.map(lambda a: a[None], cfg.fresh_state(decoder.config, key, prompt_attn_TxD))
    _, (nll_N, kl_N) = jax.lax.scan(one_window, state, (windows_NxW, ref_logp_NxWxV))
    return nll_N, kl_N

  return jax.vmap(one_seed)(init_keys_S)


def baseline_logp(model: Model, windows_NxW: np.ndarray) -> jax.Array:
  """The baseline model's next-token log-probs of each window: [N, W, V]."""
  return jax.nn.log_softmax(model.logits(windows_NxW), axis=-1)


_stepwise_jit = jax.jit(stepwise_window_nll, static_argnames=("decoder", "cfg"))


def stepwise_nll(model: Model, windows_NxW: np.ndarray, cfg, seeds: int, ref_logp_NxWxV=None):
  """`stepwise_window_nll` for seeds 0..seeds-1: NLL and KL sums, float64 [S, N] each.

  A memory that wants the prompt's attention outputs gets the first window's.
  """
  from attractor_jax.generation import seed_keys

  prompt_attn = None
  if cfg.uses_prompt:
    _, _, taps = model.decoder.apply({"params": model.params}, jnp.asarray(windows_NxW[:1]),
                                     jnp.arange(windows_NxW.shape[1])[None], method=Decoder.tapped,
                                     host_layer=cfg.layer)
    prompt_attn = taps.attn_out_BxTxD[0]
  keys = jnp.stack([seed_keys(s)[0] for s in range(seeds)])
  nll, kl = _stepwise_jit(model.params, jnp.asarray(windows_NxW), keys, prompt_attn,
                          ref_logp_NxWxV, decoder=model.decoder, cfg=cfg)
  return np.asarray(nll, np.float64), np.asarray(kl, np.float64)


def perplexity(model: Model, text: str, window: int = 512, max_tokens: int | None = None, *,
               attractor=None, seeds: int = 1) -> dict:
  """Perplexity of `text` over non-overlapping windows (no BOS), baseline and with a layer.

  With a memory (an attractor config or any `memories` config), the text is scored token by
  token for `seeds` seeds in one vmapped call and compared, window by window, with the baseline (paired).
  Returns the DESIGN.md `ppl` contract: ppl, ppl_ci95, baseline_ppl, delta_pct,
  delta_pct_ci95, tokens (plus per-seed and per-window detail).
  """
  from attractor_jax import stats

  if not isinstance(seeds, (int, np.integer)) or isinstance(seeds, bool) or seeds < 1:
    raise InputError(f"seeds={seeds!r}: pass an integer >= 1")
  windows = text_windows(model, text, window, max_tokens)
  base_N = window_nll(model, windows)
  predictions = windows.shape[0] * (window - 1)
  baseline = float(np.exp(base_N.sum() / predictions))
  out = {"ppl": baseline, "ppl_ci95": [baseline, baseline], "baseline_ppl": baseline,
         "delta_pct": 0.0, "delta_pct_ci95": [0.0, 0.0], "tokens": int(windows.size),
         "windows": int(windows.shape[0]), "window": window, "seeds": 0}
  if attractor is None or not attractor.enabled:
    return out
  attractor.check_model(model.config)
  if getattr(attractor, "init", None) == "prompt":
    raise InputError("init='prompt' would copy scored tokens into the memory: use init='noise' "
                     "for perplexity")
  nll_SxN, _ = stepwise_nll(model, windows, attractor, seeds)
  ppl_S = np.exp(nll_SxN.sum(axis=1) / predictions)
  diff_N = (nll_SxN.mean(axis=0) - base_N) / (window - 1)
  lo, hi = stats.bootstrap_ci(diff_N) if len(diff_N) > 1 else (diff_N[0], diff_N[0])
  out.update(
      ppl=float(ppl_S.mean()), ppl_ci95=list(stats.bootstrap_ci(ppl_S)) if seeds > 1
      else [float(ppl_S[0])] * 2, seeds=int(seeds),
      delta_pct=float(100 * (ppl_S.mean() / baseline - 1)),
      delta_pct_ci95=[float(100 * np.expm1(lo)), float(100 * np.expm1(hi))],
      p_value=float(stats.sign_flip_pvalue(diff_N)), per_seed_ppl=ppl_S.tolist(),
      window_nll_baseline=base_N.tolist(), window_nll=nll_SxN.mean(axis=0).tolist())
  return out
