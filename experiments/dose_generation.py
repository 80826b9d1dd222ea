"""Dose-response in generation, where sampled tokens close the loop: repetition and fact recall.

    python -m experiments.dose_generation [--model gemma3-270m] [--quick]
        ->  results/dose_generation_<model>.json (+ .png)

Clusters: FACTS fact-recall prompts (a fact, then a story opening). Each arm generates TOKENS
tokens per prompt (temperature 0.8, top-p 0.95, no stop at EOS; the sampling keys of a prompt
are the same in every arm, so arms are paired), then the question is read after the run and
the answer's first token scored among the four choices:
  carried  with the memory state the continuation left (and its KV cache);
  fresh    the same cache, the memory started afresh from the prompt.
Per prompt: seq-rep-4, rep/128 and distinct-2 of the continuation; the gold answer's
log-probability and whether it is the most likely of the four (carried and fresh).

Arms (open loop unless --loops says more): presets seed, gated, multiscale and the three
equal-norm controls at RATIOS of the residual norm, and the continuous cache as the positive
control; statistics, activity and resumability as in experiments/dose_response.py.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax.numpy as jnp
import numpy as np

import attractor_jax as aj
from attractor_jax import decoding
from attractor_jax.evals.metrics import distinct_n, rep_l, seq_rep_n
from attractor_jax.evals.tasks import fact_recall_items
from attractor_jax.prompts import cache_length, left_padded, text_ids
from attractor_jax.seeds import stacked_keys
from attractor_jax.writing import write_json_atomic
from experiments import dose_response as dose

RATIOS = (0.03, 0.1, 0.3, 1.0)
FACTS, TOKENS = 32, 256
TEMPERATURE, TOP_P = 0.8, 0.95


def questions(model, items):
  """Question tokens [I, J] (left-padded with newlines to one length; a shared leading word
  of the choices moved into the question), the index of each row's last question token, and
  each choice's first token [I, C] (distinct within an item)."""
  texts, firsts = [], []
  for item in items:
    choices = list(item.choices)
    lead = " the" if all(c.startswith(" the ") for c in choices) else ""
    texts.append(f"\n\nQuestion: {item.question}\nAnswer:{lead}")
    firsts.append([text_ids(model, c[len(lead):])[0] for c in choices])
    if len(set(firsts[-1])) != len(choices):
      raise SystemExit(f"{item.question}: choices share a first token")
  ids = [text_ids(model, t) for t in texts]
  J = max(map(len, ids))
  newline = text_ids(model, "\n")[0]
  rows = np.asarray([[newline] * (J - len(i)) + i for i in ids], np.int32)
  return rows, np.full(len(items), J, np.int32), np.asarray(firsts, np.int32)


def recall(logp_SxV, firsts_IxC, answers_I):
  logp = np.take_along_axis(np.asarray(logp_SxV, np.float64), firsts_IxC, axis=1)
  gold = logp[np.arange(len(answers_I)), answers_I]
  return gold, (logp.argmax(axis=1) == answers_I).astype(float)


def run_arm(model, memory, prompts, keys, question_rows, read_at, firsts, answers, cache_len):
  init_keys, sample_keys = keys
  engine = model.engine(memory)
  runs = decoding.sample(engine, model.params, prompts, init_keys, sample_keys, jnp.int32(TOKENS),
                         jnp.float32(TEMPERATURE), jnp.float32(TOP_P), jnp.int32(-1),
                         cache_len=cache_len, buffer=TOKENS)
  if not bool(np.all(np.asarray(runs.trace.finite))):
    raise SystemExit("NaN or Inf in a pass")
  tokens = np.asarray(runs.tokens)
  values = {"seq_rep_4": [seq_rep_n(t, 4) for t in tokens], "rep_128": [rep_l(t, 128) for t in tokens],
            "distinct_2": [distinct_n(t, 2) for t in tokens]}
  gold, correct = recall(decoding.extend(engine, model.params, runs, question_rows, read_at), firsts, answers)
  values.update(carried_gold_logprob=gold, carried_accuracy=correct)
  if memory is not None:  # the same cache, the memory started afresh from the prompt
    runs = runs.replace(memory_state=engine.fresh_states(model.params, init_keys, prompts))
    gold, correct = recall(decoding.extend(engine, model.params, runs, question_rows, read_at), firsts,
                           answers)
  values.update(fresh_gold_logprob=gold, fresh_accuracy=correct)
  return {k: np.asarray(v, np.float64) for k, v in values.items()}, runs.trace


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--loops", nargs="+", default=["open"], choices=dose.LOOPS)
  parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
  parser.add_argument("--quick", action="store_true", help="tiny grid: a smoke run")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  ratios = (0.3,) if args.quick else tuple(args.ratios)
  out = pathlib.Path(args.out or f"results/dose_generation_{args.model}.json")
  model = aj.load(args.model)
  items = fact_recall_items(4 if args.quick else FACTS, seed=7)
  grid = {k: v for k, v in dose.arms(ratios).items()
          if k.count("/") < 2 or k.split("/")[1] in args.loops}
  if args.quick:
    grid = {k: v for k, v in grid.items() if k.split("/")[0] in ("gated", "positive:cache")}
  prompts = jnp.asarray(left_padded(model, [it.prompt for it in items]))
  question_rows, read_at, firsts = questions(model, items)
  answers = np.asarray([it.answer for it in items])
  keys = stacked_keys(range(len(items)))
  cache_len = cache_length(model, prompts.shape[1], TOKENS + question_rows.shape[1] + 1)
  design = {"task": "generation", "model": args.model, "clusters": len(items),
            "tokens": TOKENS, "temperature": TEMPERATURE, "top_p": TOP_P}
  result = {"experiment": "dose-response-generation", **design, "loops": args.loops,
            "ratios": list(ratios), "arm_names": sorted(grid),
            "cluster_names": [it.fact for it in items], "arms": {}}
  result["arms"] = dose.finished_arms(out, design, grid)
  for name, memory in [("off", None), *grid.items()]:
    if name in result["arms"]:
      continue
    t0 = time.time()
    values, trace = run_arm(model, memory, prompts, keys, jnp.asarray(question_rows),
                            jnp.asarray(read_at), firsts, answers, cache_len)
    every_pass = lambda: np.ones(np.asarray(trace.feedback_ratio).shape, bool)
    dose.record(result, name, memory, values,
                lambda: dose.activity(memory, trace, every_pass()), time.time() - t0)
    write_json_atomic(out, result)
  dose.finalize(result, {"seq_rep_4": 1.0, "carried_gold_logprob": -1.0,
                         "carried_accuracy": -1.0})
  write_json_atomic(out, result)
  for metric in ("seq_rep_4", "carried_gold_logprob"):
    dose.plot(result, out.with_name(f"{out.stem}_{metric}.png"), metric)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
