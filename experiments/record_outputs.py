"""Records what the public API produces, to prove a refactor changed nothing.

    python -m experiments.record_outputs --out before.json            # on the old code
    python -m experiments.record_outputs --out after.json --compare before.json

Per model and memory preset: greedy and sampled `generate` tokens, a sampled 3-seed
`generate_seeds`, a two-prompt `generate_prompts`; perplexity (token by token, 2 seeds) and
choice scores for a few presets. `--compare` exits 1 listing every token that differs and
every float beyond `--rtol` (relative).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

import attractor_jax as aj
from attractor_jax.data import load_text
from attractor_jax.evals.choice import choice_scores

PROMPT = "It is a truth universally acknowledged, that a single man"
PROMPTS = ("The weather that morning was", "She opened the letter and read")
SCORED = ("seed", "gated", "cache", "dynamic-eval")
ITEMS = (("Emma walked to the village and bought a loaf of", ("bread", "stone")),
         ("The sun rose over the quiet", ("hills", "spoons")))


def record(spec: str) -> dict:
  """Every output of one model, keyed by what produced it."""
  model, out = aj.load(spec), {}
  text = load_text("persuasion")[:4000]
  for name, memory in aj.presets.items():
    greedy = aj.generate(model, PROMPT, 24, memory=memory)
    sampled = aj.generate(model, PROMPT, 24, memory=memory, seed=1, temperature=0.8, top_p=0.95)
    seeds = aj.generate_seeds(model, PROMPT, 16, memory=memory, seeds=3, temperature=0.8,
                              top_p=0.95)
    prompts = aj.generate_prompts(model, same_length(model, PROMPTS), 16, memory=memory, seeds=2)
    out[f"{name}/generate"] = greedy.tokens
    out[f"{name}/sampled"] = sampled.tokens
    out[f"{name}/seeds"] = seeds.tokens
    out[f"{name}/prompts"] = [runs.tokens for runs in prompts]
    if memory is not None:
      traced = aj.generate(model, PROMPT, 8, memory=memory, trace=True)
      out[f"{name}/feedback_ratio"] = np.asarray(traced.trace.feedback_ratio, float).tolist()
    if name in SCORED:
      ppl = aj.perplexity(model, text, window=64, max_tokens=192, memory=memory, seeds=2)
      out[f"{name}/ppl"] = ppl.per_seed_ppl
      scores = choice_scores(model, [c for c, _ in ITEMS], [ch for _, ch in ITEMS], memory=memory,
                             seeds=2)
      out[f"{name}/choice"] = scores.logprob.tolist()
    jax.clear_caches()  # one process compiles every preset's programs: free their mappings
  out["off/ppl"] = [aj.perplexity(model, text, window=64, max_tokens=192).baseline_ppl]
  return out


def same_length(model, texts) -> list[list[int]]:
  """The texts' token ids, cut to the shortest's length (any version batches them)."""
  ids = [model.tokenizer.encode(t) for t in texts]
  return [i[:min(map(len, ids))] for i in ids]


def differences(old, new, rtol: float, path: str = "") -> list[str]:
  """Where `new` differs from `old`: ints exactly, floats beyond `rtol` (relative)."""
  if isinstance(old, dict):
    keys = sorted(set(old) | set(new))
    return [d for k in keys for d in (differences(old.get(k), new.get(k), rtol, f"{path}/{k}")
                                      if k in old and k in new else [f"{path}/{k}: only one side"])]
  if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
    return [d for i, (a, b) in enumerate(zip(old, new))
            for d in differences(a, b, rtol, f"{path}[{i}]")]
  if isinstance(old, float) or isinstance(new, float):
    if abs(old - new) <= rtol * max(abs(old), abs(new), 1e-30) or (np.isnan(old) and np.isnan(new)):
      return []
  elif old == new:
    return []
  return [f"{path}: {old!r:.80} -> {new!r:.80}"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
  parser.add_argument("--compare", default=None, help="an earlier --out to compare with")
  parser.add_argument("--rtol", type=float, default=1e-5)
  args = parser.parse_args(argv)
  result = {spec: record(spec) for spec in args.models.split(",")}
  pathlib.Path(args.out).write_text(json.dumps(result))
  if args.compare:
    diffs = differences(json.loads(pathlib.Path(args.compare).read_text()), result, args.rtol)
    print("\n".join(diffs) or "identical", file=sys.stderr)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
  main()
