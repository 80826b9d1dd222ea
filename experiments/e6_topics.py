"""E6: snap-back after a topic switch, dead attractors, and what the attractors encode.

    python -m experiments.e6_topics [--quick] [--presets a,b]  ->  results/e6_topics.json

Prompts: passage A (one topic) then passage B (another), each cut to 48 tokens; every ordered
pair of the 6 topics (30 prompts). The share of 50-token continuation windows whose mean hidden
state is closer to A's than to B's is "snap-back" (0 = stays on B). Paired with off over
(prompt, seed) items, clusters = prompts; each preset's minimum detectable effect (80% power,
over prompt means) and Holm-adjusted p over the presets beside its CI.
Also: the share of dead attractors at the end, and each attractor read out through the
final norm and the unembedding (top tokens), for seed 0 of every prompt (attractor presets).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import attractor_jax as aj
from attractor_jax import layers, stats
from attractor_jax.evals.metrics import snap_back_share
from attractor_jax.evals.tasks import topic_switch_prompts
from attractor_jax.prompts import prompt_ids
from attractor_jax.results import provenance
from attractor_jax.writing import write_json_atomic
from experiments.common import add_mde_and_holm, gate_share

PRESETS = ("seed", "gated", "multiscale")
PART_TOKENS = 48


def topic_vectors(model, ids_a, ids_b):
  """Mean final hidden state over passage A's and passage B's tokens (one baseline pass)."""
  h = np.asarray(model.taps(ids_a + ids_b).hidden[0])
  return h[: len(ids_a)].mean(0), h[len(ids_a):].mean(0)


def readout(model, state, top: int = 5) -> list[list[str]]:
  """Top tokens of each attractor vector through the final norm and the unembedding."""
  vecs = jnp.asarray(state.vectors).reshape(-1, model.config.width)[None]
  h = layers.norm(vecs, model.params["final_norm"], model.config)[0]
  logits = h @ model.params["embed"]["embedding"].T
  ids = np.asarray(jax.lax.top_k(logits, top)[1])
  return [[model.tokenizer.decode([int(i)]) for i in row] for row in ids]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--out", default="results/e6_topics.json")
  args = parser.parse_args(argv)
  n_prompts, seeds, tokens = (1, 2, 100) if args.quick else (30, 2, 150)
  presets = args.presets.split(",")[:1] if args.quick else args.presets.split(",")
  t0 = time.time()
  model = aj.load()
  rows = {p: [] for p in ("off", *presets)}
  dead = {p: [] for p in presets if isinstance(aj.presets[p], aj.AttractorConfig)}
  readouts, gate_open = {}, {}
  prompts = topic_switch_prompts(n_prompts, seed=0)
  parts = [(prompt_ids(model, tp.text_a)[:PART_TOKENS].tolist(),
            prompt_ids(model, tp.text_b)[:PART_TOKENS].tolist()) for tp in prompts]
  vectors = [topic_vectors(model, ids_a, ids_b) for ids_a, ids_b in parts]
  bar = tqdm(total=1 + len(presets), desc="E6 generations (all prompts x seeds per call)",
             file=sys.stderr)
  for preset in ("off", *presets):
    memory = aj.presets[preset]
    runs = aj.generate_prompts(model, [a + b for a, b in parts], tokens, memory=memory,
                               seeds=seeds, temperature=0.8, top_p=0.95)
    gate_open[preset] = gate_share(runs)
    for cluster, (tp, run, (vec_a, vec_b)) in enumerate(zip(prompts, runs, vectors)):
      for s, toks in enumerate(run.tokens):
        hidden = np.asarray(run.trace.hidden[s][: len(toks)])
        share = snap_back_share(hidden, vec_a, vec_b, 50) if len(toks) >= 50 else float("nan")
        rows[preset].append({"cluster": cluster, "seed": s, "snap_back": share})
      if isinstance(memory, aj.AttractorConfig):
        st = run.states
        is_dead = ((np.asarray(st.strength) < memory.s_dead)
                   & (np.asarray(st.idle) > memory.dead_after))
        dead[preset].append(float(is_dead.mean()))
        readouts[f"{preset}/{tp.topic_a}->{tp.topic_b}"] = readout(
            model, jax.tree.map(lambda a: a[0], st))
    bar.update()
  bar.close()
  clusters = np.array([r["cluster"] for r in rows["off"]])
  col = lambda p: np.array([r["snap_back"] for r in rows[p]])
  # A continuation that stops (EOS) before one 50-token window has no share: its item is left
  # out of that preset's summary and of its pairing with off (the count is reported).
  kept = lambda *ps: np.all([np.isfinite(col(p)) for p in ps], axis=0)
  paired = {p: stats.paired(col(p)[kept(p, "off")], col("off")[kept(p, "off")],
                            clusters=clusters[kept(p, "off")]) for p in presets}
  add_mde_and_holm({p: {"snap_back": paired[p]} for p in presets},
                   {p: {"snap_back": col(p) - col("off")} for p in presets}, clusters)
  write_json_atomic(args.out, {
      "experiment": "E6", "claim": "snap-back to earlier topics; stable concept attractors; "
                                   "dead ones become noise",
      "model": model.spec, "data": [f"{t.topic_a} -> {t.topic_b}" for t in prompts],
      "n_items": len(rows["off"]), "seeds": seeds, "max_new_tokens": tokens,
      "summary": {p: stats.summarize(col(p)[kept(p)], clusters=clusters[kept(p)]) for p in rows},
      "paired_vs_off": paired,
      "items_without_a_window": {p: int((~kept(p)).sum()) for p in rows},
      "dead_share": {p: stats.summarize(v) for p, v in dead.items()}, "gate_open": gate_open,
      "attractor_readout_top5": readouts, **provenance(time.time() - t0), "quick": args.quick})


if __name__ == "__main__":
  main()
