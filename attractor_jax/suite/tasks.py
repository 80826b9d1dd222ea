"""The suite's tasks: each reads its clusters with one arm and returns per-cluster metrics.

  recall      key-value recall, an item a cluster: the gold answer's log-probability and
              whether it outscores the other choices (teacher forced, a fresh memory per item).
  perplexity  a passage of several windows a cluster, the model's context restarting at every
              window while the memory carries over (`forcing.carried`): where a memory of
              text the model can no longer see can help; NLL per token.
  generation  a prompt a cluster: a fact, then a sampled continuation with the loop closed by
              the sampled tokens; the question read after it with the carried memory; the
              continuation's repetition (seq-rep-4, distinct-2) and drift from the prompt.
  comprehension  a story a cluster: a question on it with four choices, ranked by
              log-likelihood after the story is read token by token (one or none of the
              distractors from the story: off is right on 60-90%, headroom both ways).

Every arm also records its realised size per cluster: the mean over the passes of
|feedback made| / residual norm (`Step.produced_ratio`), the size controls impose; and what
the memory did (`Memory.activity`, e.g. the attractor's share of banks with the gate open),
its mean over the passes, so that an arm that never activated says so.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from attractor_jax import decoding, forcing
from attractor_jax.evals.choice import pack
from attractor_jax.evals.metrics import distinct_n, seq_rep_n, window_drift
from attractor_jax.evals.tasks import comprehension_items
from attractor_jax.prompts import cache_length
from attractor_jax.seeds import stacked_keys
from attractor_jax.suite import clusters as cl

PROMPT_LEN = 32  # a perplexity passage's memory starts from its first window's first tokens
TEMPERATURE, TOP_P = 0.8, 0.95


class Measured(NamedTuple):
  """One arm on one task's clusters."""
  values: dict[str, np.ndarray]  # metric -> [G]
  produced_ratio: np.ndarray  # [G]: the arm's realised size per cluster
  feedback_ratio: np.ndarray  # [G]: |feedback received| / residual norm, mean over the passes
  activity: dict[str, np.ndarray] = {}  # name -> [G]: `Memory.activity`, mean over the passes


@dataclasses.dataclass(frozen=True)
class Task:
  """A task: its clusters per split and size, and how an arm is scored on them."""
  name: str
  metric: str  # the main metric
  higher_is_better: bool
  sizes: dict  # "quick"/"full" -> the cluster design

  def rows(self, model, split: str, size: str):
    raise NotImplementedError

  def score(self, model, memory, rows, ratio_G=None) -> Measured:
    """`memory` (None: off) on `rows`; `ratio_G` sets a control's size per cluster."""
    raise NotImplementedError

  def clusters(self, rows) -> int:
    raise NotImplementedError


@functools.partial(jax.jit, static_argnames=("engine",))
def _fresh_states(engine, params, keys_B, prompts_BxT):
  return engine.fresh_states(params, keys_B, prompts_BxT)


def start_states(engine, params, keys_B, prompts_BxT, ratio_G):
  """None (the task's own fresh states) unless `ratio_G` sizes a control per row."""
  if ratio_G is None:
    return None
  states = _fresh_states(engine, params, keys_B, prompts_BxT)
  return states.replace(ratio=jnp.asarray(ratio_G, jnp.float32))


def _per_cluster(tree) -> dict[str, np.ndarray]:
  return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def _finite(name, finite):
  if not bool(np.all(np.asarray(finite))):
    raise FloatingPointError(f"{name}: NaN or Inf in a pass")


@dataclasses.dataclass(frozen=True)
class Recall(Task):
  name: str = "recall"
  metric: str = "gold_logprob"
  higher_is_better: bool = True
  sizes: dict = dataclasses.field(default_factory=lambda: {"quick": 12, "full": 384})

  def rows(self, model, split, size):
    cl.check_split(split)
    return cl.kv_rows(model, self.sizes[size], seed=cl.KV_SEEDS[split])

  def clusters(self, rows):
    return len(rows.answers)

  def score(self, model, memory, rows, ratio_G=None):
    engine = model.engine(memory)
    keys, _ = stacked_keys(range(len(rows.answers)))
    tokens = jnp.asarray(rows.tokens)
    states = start_states(engine, model.params, keys, tokens[:, :cl.KV_PROMPT_LEN], ratio_G)
    forced = forcing.teacher_forced(engine, model.params, tokens, keys, rows.candidates, states,
                                    prompt_len=cl.KV_PROMPT_LEN)
    _finite(self.name, forced.finite)
    read = np.zeros(rows.tokens.shape, bool)  # the passes up to the answer's last prediction
    for r, (s, n) in enumerate(rows.spans):
      read[r, :s - 1 + n] = True
    mean = lambda a: np.where(read, np.asarray(a), 0.0).sum(1) / read.sum(1)
    values = cl.kv_metrics(np.asarray(forced.nll, np.float64),
                           np.asarray(forced.candidate_logprob), rows)
    activity = forcing.activity(engine, forced.info, jnp.asarray(read))
    return Measured(values, mean(forced.produced_ratio), mean(forced.feedback_ratio),
                    _per_cluster(activity))


@dataclasses.dataclass(frozen=True)
class Perplexity(Task):
  name: str = "perplexity"
  metric: str = "nll"
  higher_is_better: bool = False
  sizes: dict = dataclasses.field(default_factory=lambda: {
      "quick": (1, 2, 48), "full": (8, 4, 128)})  # passages per novel, windows, length
  unscored: int = 0  # each window's first predictions left out of the metrics
  through: float = 0.9  # passages start evenly from 5% of each novel to this fraction

  def rows(self, model, split, size):
    return cl.passages(model, split, *self.sizes[size], through=self.through)

  def clusters(self, rows):
    return rows.shape[0]

  def score(self, model, memory, rows, ratio_G=None):
    engine = model.engine(memory)
    windows = jnp.asarray(rows)
    keys, _ = stacked_keys(range(rows.shape[0]))
    states = _fresh_states(engine, model.params, keys, windows[:, 0, :PROMPT_LEN])
    if ratio_G is not None:
      states = states.replace(ratio=jnp.asarray(ratio_G, jnp.float32))
    forced = forcing.carried(engine, model.params, windows, states)
    _finite(self.name, forced.finite)
    nll = np.asarray(forced.nll, np.float64)[:, :, self.unscored:]  # [P, W, scored]
    values = {"nll": nll.mean(axis=(1, 2))}
    if nll.shape[1] > 1:
      values.update(nll_first_window=nll[:, 0].mean(axis=1),
                    nll_later_windows=nll[:, 1:].mean(axis=(1, 2)))
    per_row = lambda a: np.asarray(a, np.float64).mean(axis=(1, 2))
    activity = {k: np.asarray(v, np.float64).mean(axis=1) for k, v in forced.info.items()}
    return Measured(values, per_row(forced.produced_ratio), per_row(forced.feedback_ratio),
                    activity)


@dataclasses.dataclass(frozen=True)
class Generation(Task):
  name: str = "generation"
  metric: str = "carried_gold_logprob"
  higher_is_better: bool = True
  sizes: dict = dataclasses.field(default_factory=lambda: {
      "quick": (4, 32), "full": (48, 256)})  # prompts, generated tokens

  def rows(self, model, split, size):
    cl.check_split(split)
    prompts, tokens = self.sizes[size]
    return cl.fact_rows(model, prompts, seed=cl.FACT_SEEDS[split]), tokens

  def clusters(self, rows):
    return len(rows[0].answers)

  def score(self, model, memory, rows, ratio_G=None):
    engine, params = model.engine(memory), model.params
    rows, tokens = rows
    prompts = jnp.asarray(rows.prompts)
    init_keys, sample_keys = stacked_keys(range(len(rows.answers)))
    cache_len = cache_length(model, prompts.shape[1], tokens + rows.questions.shape[1] + 1)
    states = start_states(engine, params, init_keys, prompts, ratio_G)
    runs = decoding.prefill(engine, params, prompts, init_keys, sample_keys,
                            jnp.float32(TEMPERATURE), jnp.float32(TOP_P), jnp.int32(-1), states,
                            cache_len=cache_len, buffer=tokens)
    runs = decoding.decode(engine, params, runs, sample_keys, jnp.int32(tokens),
                           jnp.float32(TEMPERATURE), jnp.float32(TOP_P), jnp.int32(-1),
                           phases_from=prompts.shape[1])
    _finite(self.name, runs.trace.finite)
    continuation = np.asarray(runs.tokens)
    hidden = np.asarray(runs.trace.hidden, np.float64)  # [I, n, D]
    logp = decoding.extend(engine, params, runs, jnp.asarray(rows.questions),
                           jnp.asarray(rows.read_at))
    gold, correct = cl.recall(logp, rows.firsts, rows.answers)
    window = max(tokens // 4, 1)
    values = {"carried_gold_logprob": gold, "carried_accuracy": correct,
              "seq_rep_4": np.asarray([seq_rep_n(t, 4) for t in continuation]),
              "distinct_2": np.asarray([distinct_n(t, 2) for t in continuation]),
              # cos(the last quarter's mean hidden state, the first quarter's): lower drifts more
              "drift": np.asarray([window_drift(h, h[:window].mean(0), window)[-1]
                                   for h in hidden])}
    ratio = lambda a: (np.zeros(len(gold)) if a is None else np.asarray(a, np.float64).mean(1))
    activity = forcing.activity(engine, runs.trace.info)
    return Measured(values, ratio(runs.trace.produced_ratio), ratio(runs.trace.feedback_ratio),
                    _per_cluster(activity))


@dataclasses.dataclass(frozen=True)
class Comprehension(Task):
  name: str = "comprehension"
  metric: str = "accuracy"
  higher_is_better: bool = True
  sizes: dict = dataclasses.field(default_factory=lambda: {"quick": 12, "full": 96})  # stories

  def rows(self, model, split, size):
    cl.check_split(split)
    items = comprehension_items(self.sizes[size], seed=0, split=cl.STORY_SPLITS[split])
    contexts, choices, mask = pack(model, [it.prompt for it in items],
                                   [it.choices for it in items], multiple=1)
    return contexts, choices, mask, np.asarray([it.answer for it in items])

  def clusters(self, rows):
    return len(rows[3])

  def score(self, model, memory, rows, ratio_G=None):
    engine = model.engine(memory)
    contexts, choices, mask, answers = rows
    keys, _ = stacked_keys(range(len(answers)))
    contexts = jnp.asarray(contexts)
    states = start_states(engine, model.params, keys, contexts, ratio_G)
    logprob, _, activity, produced, fed = forcing.choice_scores(
        engine, model.params, contexts, jnp.asarray(choices), jnp.asarray(mask), keys, states,
        segment=1)
    logprob = np.asarray(logprob, np.float64)  # [I, C]
    if not np.all(np.isfinite(logprob)):
      raise FloatingPointError(f"{self.name}: NaN or Inf in a choice's log-likelihood")
    gold = logprob[np.arange(len(answers)), answers]
    others = np.where(np.arange(logprob.shape[1]) == answers[:, None], -np.inf, logprob)
    values = {"accuracy": (logprob.argmax(axis=1) == answers).astype(float),
              "gold_margin": gold - others.max(axis=1)}
    return Measured(values, np.asarray(produced, np.float64), np.asarray(fed, np.float64),
                    _per_cluster(activity))


TASKS: dict[str, Task] = {t.name: t for t in (Recall(), Perplexity(), Generation(),
                                              Comprehension())}
