"""Prompts as token ids: tokenizing, left-padding to one length, and the buffer sizes of a run."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.model import Model, check_tokens

BUCKET = 128  # KV slots and output buffers are rounded up to this: nearby lengths share programs


def bos(model: Model) -> list[int]:
  """[BOS] for a model whose tokenizer starts every text with it (Gemma), else [] (SmolLM2)."""
  tokenizer = model.tokenizer
  return [tokenizer.bos_id] if tokenizer.add_bos else []


def text_ids(model: Model, text: str) -> list[int]:
  """`text`'s token ids without BOS: a window's body, a continuation, a choice."""
  return model.tokenizer.encode(text, add_bos=False)


def prompt_ids(model: Model, prompt: str | Sequence[int], chat: bool = False) -> np.ndarray:
  """A prompt's token ids as the model's tokenizer makes them (BOS first when the model wants
  it; the chat template when asked)."""
  if isinstance(prompt, str):
    if not prompt.strip():
      raise InputError("the prompt is empty: pass some text")
    if model.tokenizer is None:
      raise InputError(f"model {model.spec!r} has no tokenizer: pass token ids instead of text")
    if chat:
      prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    prompt = model.tokenizer.encode(prompt)
  return np.asarray(check_tokens(prompt, model.config))[0]


def left_padded(model: Model, texts: Sequence[str], multiple: int = 1) -> np.ndarray:
  """The texts' token ids left-padded with newlines to one width, the longest rounded up to a
  multiple of `multiple`: int32 [texts, width]. Batches need one length; blank lines before
  a text leave it reading as it did. A model that wants BOS gets it first, before the pad."""
  start, ids = bos(model), [text_ids(model, t) for t in texts]
  width = -(-(len(start) + max(map(len, ids))) // multiple) * multiple
  rows = np.full((len(ids), width), text_ids(model, "\n")[0], np.int32)
  rows[:, :len(start)] = start
  for row, row_ids in zip(rows, ids):
    row[width - len(row_ids):] = row_ids
  return rows


def buffer_length(max_new_tokens: int) -> int:
  """Output slots for up to `max_new_tokens` tokens, rounded up to a bucket."""
  return -(-max_new_tokens // BUCKET) * BUCKET


def cache_length(model: Model, prompt_len: int, max_new_tokens: int) -> int:
  """KV slots for a run: the prompt and the output buffer, rounded up to a bucket (so every
  token count of one buffer runs one program); refused beyond the model's context."""
  need = prompt_len + max_new_tokens
  if need > model.config.max_len:
    raise InputError(
        f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) = {need} exceeds the "
        f"model's context {model.config.max_len}: shorten the prompt or lower max_new_tokens")
  slots = prompt_len + buffer_length(max_new_tokens)
  return min(-(-slots // BUCKET) * BUCKET, model.config.max_len)
