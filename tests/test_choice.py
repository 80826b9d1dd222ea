"""Multiple-choice scoring (evals.choice) against a full forward over the same token rows."""

import dataclasses

import numpy as np
import pytest

from attractor_jax.errors import InputError
from attractor_jax.evals.choice import PAD_SEGMENTS, choice_logprobs, choice_scores, pack
from attractor_jax.presets import presets
from attractor_jax.prompts import left_padded
from tiny_models import random_model

SEGMENT = 4


def _reference(model, ctx_L, choice_ids):
  """(log-likelihood, every token argmax) of a choice after the padded context, full forward."""
  row = np.concatenate([ctx_L, choice_ids])
  logits_TxV = np.asarray(model.logits(row[None])[0], np.float64)
  logp_TxV = logits_TxV - np.log(np.exp(logits_TxV).sum(-1, keepdims=True))
  at = np.arange(len(ctx_L) - 1, len(row) - 1)  # positions predicting the choice's tokens
  return logp_TxV[at, choice_ids].sum(), bool((logp_TxV[at].argmax(-1) == choice_ids).all())


def _greedy_continuation(model, ctx_L, n):
  row = list(ctx_L)
  for _ in range(n):
    row.append(int(np.argmax(model.logits(np.asarray(row)[None])[0, -1])))
  return row[len(ctx_L):]


@pytest.mark.parametrize("batch", [1, 16])  # the pad depends on the item, not on the batch
def test_off_scores_equal_a_full_forward_and_greedy_flags_the_argmax_path(batch):
  model = random_model(3, tokenizer=True)
  contexts = ["a longer context: more than sixteen bytes", "the cat sat", "a cat"]
  ctx_IxL = [pack(model, [c], [(" x",)], SEGMENT * PAD_SEGMENTS)[0][0] for c in contexts]
  assert [len(c) for c in ctx_IxL] == [48, 16, 16]  # two length buckets
  greedy_ids = _greedy_continuation(model, ctx_IxL[0], 3)
  greedy_text = bytes(greedy_ids).decode("latin-1")  # the byte tokenizer: id = byte
  assert model.tokenizer.encode(greedy_text) == greedy_ids
  choices = [(greedy_text, " dog", "!"), (" mat.", " hat", " sat on"), ("!", "?", " hat")]
  assert presets["off"] is None
  logprob_SxIxC, greedy_SxIxC, gate_SxI = choice_scores(
      model, contexts, choices, memory=presets["off"], seeds=1, segment=SEGMENT, batch=batch)
  assert logprob_SxIxC.shape == greedy_SxIxC.shape == (1, 3, 3)
  assert gate_SxI == {}  # no memory, no activity
  for i, (ctx_L, cs) in enumerate(zip(ctx_IxL, choices)):
    for c, text in enumerate(cs):
      want_lp, want_greedy = _reference(model, ctx_L, np.asarray(model.tokenizer.encode(text)))
      np.testing.assert_allclose(logprob_SxIxC[0, i, c], want_lp, rtol=1e-4, atol=1e-4)
      assert greedy_SxIxC[0, i, c] == want_greedy, (i, c)
  assert greedy_SxIxC[0, 0, 0]  # the model's own greedy path is all argmax
  np.testing.assert_array_equal(
      choice_logprobs(model, contexts, choices, memory=None, seeds=1, segment=SEGMENT,
                      batch=batch), logprob_SxIxC)


def test_items_with_different_choice_counts_are_refused():
  model = random_model(3, tokenizer=True)
  with pytest.raises(InputError, match="different numbers of choices"):
    pack(model, ["a", "b"], [(" x", " y"), (" x",)], SEGMENT)


def test_left_padded_puts_newlines_before_each_text_up_to_a_multiple():
  model = random_model(3, tokenizer=True)
  encode = model.tokenizer.encode
  rows = left_padded(model, ["ab", "abcde"], multiple=4)
  assert rows.dtype == np.int32 and rows.shape == (2, 8)  # 5 tokens, rounded up to 8
  assert rows.tolist() == [encode("\n") * 6 + encode("ab"), encode("\n") * 3 + encode("abcde")]
  assert left_padded(model, ["ab", "abcde"]).shape == (2, 5)


def test_a_memory_that_feeds_back_zero_scores_as_no_memory_and_feedback_moves_the_scores():
  """The memory reads the context in segments: with alpha = 0 its feedback is exactly zero,
  so every seed scores as memory=None; with alpha > 0 the scores move."""
  model = random_model(3, tokenizer=True)
  contexts, choices = ["the cat sat on the mat and then", "a cat"], [(" x", " hat"), ("!", "?")]
  kw = dict(seeds=2, segment=SEGMENT)
  off = choice_logprobs(model, contexts, choices, memory=None, **kw)
  seed1 = dataclasses.replace(presets["seed"], layer=1)
  silent = choice_logprobs(model, contexts, choices, memory=dataclasses.replace(seed1, alpha=0.0),
                           **kw)
  loud = choice_logprobs(model, contexts, choices, memory=dataclasses.replace(seed1, alpha=5.0),
                         **kw)
  assert off.shape == silent.shape == loud.shape == (2, 2, 2)
  np.testing.assert_allclose(off[0], off[1], rtol=0, atol=0)  # no memory: seeds cannot differ
  np.testing.assert_allclose(silent, off, rtol=1e-5, atol=1e-5)
  assert np.abs(loud - off).max() > 1e-3


@pytest.mark.parametrize("burn_in, opens", [(16, True), (10_000, False)])
def test_gated_burn_in_counts_tokens_so_a_64_token_item_opens_its_gate(burn_in, opens):
  """A 64-token context read in 16-token passes is 4 passes: a 16-token burn-in ends with the
  first (counted in passes it would never end); the open gate moves the scores, and the
  recorded gate share says so. A burn-in longer than the item keeps `gated` equal to off."""
  model = random_model(3, tokenizer=True)
  contexts = ["the cat sat on the mat and then the dog sat on the cat"]
  choices = [(" x", " hat")]
  kw = dict(seeds=2, segment=16)
  gated = dataclasses.replace(presets["gated"], layer=1, alpha=5.0, theta_gate=-1.0,
                              burn_in_steps=burn_in, burn_in_strength=0.0)
  off = choice_scores(model, contexts, choices, memory=None, **kw)
  on = choice_scores(model, contexts, choices, memory=gated, **kw)
  assert pack(model, contexts, choices, 16 * PAD_SEGMENTS)[0].shape == (1, 64)
  if opens:
    np.testing.assert_array_equal(on.activity["gate_open"], np.ones((2, 1)))  # open at once
    assert np.abs(on.logprob - off.logprob).max() > 1e-3
  else:
    np.testing.assert_array_equal(on.activity["gate_open"], np.zeros((2, 1)))
    np.testing.assert_allclose(on.logprob, off.logprob, rtol=1e-5, atol=1e-5)
