"""The suite's clusters: the rows each task reads, on a calibration or an evaluation split.

Splits never share a cluster: perplexity passages come from different novels, recall items
from different seeds of the same generators, comprehension stories from the two halves of
the story generator's hash split (docs/method.md, "The suite").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from attractor_jax.data import load_text
from attractor_jax.evals.tasks import fact_recall_items, kv_recall_items
from attractor_jax.prompts import bos, left_padded, prompt_ids, text_ids

SPLITS = ("calibration", "evaluation")
NOVELS = {"calibration": ("emma", "prideprejudice", "sensesensibility"),
          "evaluation": ("persuasion", "northangerabbey", "mansfieldpark")}
KV_SEEDS = {"calibration": 13, "evaluation": 12}
FACT_SEEDS = {"calibration": 8, "evaluation": 7}
STORY_SPLITS = {"calibration": "calibration", "evaluation": "test"}  # comprehension_items'
KV_PAIRS, KV_PROMPT_LEN = 2, 8  # the memory starts from the item's first 8 tokens


def check_split(split: str):
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS}")


def passages(model, split: str, per_novel: int, windows: int, length: int, *,
             through: float = 0.9) -> np.ndarray:
  """[P, W, L] token ids: `per_novel` passages of each of the split's novels, evenly spaced
  from 5% of it to `through` (each from a paragraph's start), each `windows` consecutive
  windows of `length` tokens, every window opening with BOS."""
  check_split(split)
  out = []
  for novel in NOVELS[split]:
    text = load_text(novel)
    for start in np.linspace(0.05, through, per_novel) * len(text):
      paragraph = text.index("\n\n", int(start)) + 2
      ids = text_ids(model, text[paragraph:paragraph + 8 * windows * length])
      step = length - len(bos(model))
      out.append([bos(model) + ids[w * step:(w + 1) * step] for w in range(windows)])
  return np.asarray(out, np.int32)


class KvRows(NamedTuple):
  """Key-value recall rows: one per item, its prompt then its gold answer (zeros after)."""
  tokens: np.ndarray  # [I, L]
  spans: np.ndarray  # [I, 2]: the answer's first position and its token count
  candidates: np.ndarray  # [K]: the first token of every distinct choice
  choices: np.ndarray  # [I, C]: each item's choices as indices into `candidates`
  answers: np.ndarray  # [I]: the gold choice


def kv_rows(model, items_n: int, seed: int) -> KvRows:
  """`items_n` key-value items with KV_PAIRS pairs and no filler, as one row each."""
  items = kv_recall_items(KV_PAIRS, 0, items_n, seed=seed)
  first = {c: text_ids(model, c)[0] for item in items for c in item.choices}
  if len(set(first.values())) != len(first):
    raise ValueError(f"{model.spec}: two kv choices share a first token")
  candidates = sorted(first)
  seqs, spans = [], []
  for item in items:
    prompt = prompt_ids(model, item.prompt).tolist()
    answer = text_ids(model, item.choices[item.answer])
    seqs.append(prompt + answer)
    spans.append((len(prompt), len(answer)))
  tokens = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
  for r, s in enumerate(seqs):
    tokens[r, :len(s)] = s
  return KvRows(tokens, np.asarray(spans), np.asarray([first[c] for c in candidates], np.int32),
                np.asarray([[candidates.index(c) for c in it.choices] for it in items]),
                np.asarray([it.answer for it in items]))


def kv_metrics(nll_IxT: np.ndarray, candidate_logprob_IxLxK: np.ndarray, kv: KvRows
               ) -> dict[str, np.ndarray]:
  """Per item: the gold answer's log-probability, and whether its first token outscores the
  other choices' first tokens where the answer starts."""
  rows = np.arange(len(kv.answers))
  gold = np.asarray([-nll_IxT[r, s - 1:s - 1 + n].sum() for r, (s, n) in enumerate(kv.spans)])
  at_answer = candidate_logprob_IxLxK[rows, kv.spans[:, 0] - 1]  # [I, K]
  picked = np.take_along_axis(at_answer, kv.choices, axis=1).argmax(axis=1)
  return {"gold_logprob": gold, "accuracy": (picked == kv.answers).astype(float)}


class FactRows(NamedTuple):
  """Long-generation prompts (a fact, then a story opening) and the question read after."""
  prompts: np.ndarray  # [I, T] left-padded prompts
  questions: np.ndarray  # [I, J] question tokens, left-padded with newlines
  read_at: np.ndarray  # [I]: the index of each row's last question token (J)
  firsts: np.ndarray  # [I, C]: each choice's first token
  answers: np.ndarray  # [I]: the gold choice
  names: list[str]  # each item's fact


def fact_rows(model, items_n: int, seed: int) -> FactRows:
  """`items_n` fact-recall prompts; a shared leading word of the choices moves into the
  question so that the choices' first tokens differ."""
  items = fact_recall_items(items_n, seed=seed)
  texts, firsts = [], []
  for item in items:
    lead = " the" if all(c.startswith(" the ") for c in item.choices) else ""
    texts.append(f"\n\nQuestion: {item.question}\nAnswer:{lead}")
    firsts.append([text_ids(model, c[len(lead):])[0] for c in item.choices])
    if len(set(firsts[-1])) != len(item.choices):
      raise ValueError(f"{item.question}: choices share a first token")
  ids = [text_ids(model, t) for t in texts]
  J = max(map(len, ids))
  newline = text_ids(model, "\n")[0]
  questions = np.asarray([[newline] * (J - len(i)) + i for i in ids], np.int32)
  return FactRows(np.asarray(left_padded(model, [it.prompt for it in items]), np.int32),
                  questions, np.full(len(items), J, np.int32), np.asarray(firsts, np.int32),
                  np.asarray([it.answer for it in items]), [it.fact for it in items])


def recall(logp_IxV, firsts_IxC, answers_I) -> tuple[np.ndarray, np.ndarray]:
  """The gold answer's first-token log-probability, and whether it is the likeliest choice."""
  logp = np.take_along_axis(np.asarray(logp_IxV, np.float64), firsts_IxC, axis=1)
  gold = logp[np.arange(len(answers_I)), answers_I]
  return gold, (logp.argmax(axis=1) == answers_I).astype(float)
