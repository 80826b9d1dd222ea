"""`make demo`: 200 greedy tokens on the default model with presets off, seed and gated, side by side."""

from __future__ import annotations

import itertools
import sys
import textwrap

from tqdm import tqdm

import attractor_jax as aj
from attractor_jax.evals.metrics import seq_rep_n

PROMPT = ("It is a truth universally acknowledged, that a single man in possession of a good "
          "fortune, must be in want of a wife. However little known the feelings or views of such "
          "a man may be on his first entering a neighbourhood,")
PRESETS = ("off", "seed", "gated")
COLUMN = 38


def run(max_new_tokens: int = 200) -> dict:
  """Generates with each preset; returns {preset: Generation}."""
  with tqdm(total=len(PRESETS) + 1, desc="loading model", file=sys.stderr) as bar:
    model = aj.load()
    bar.update()
    results = {}
    for name in PRESETS:
      bar.set_description(f"generating ({name})")
      results[name] = aj.generate(model, PROMPT, max_new_tokens, memory=aj.presets[name])
      bar.update()
  return results


def side_by_side(texts: dict[str, str]) -> str:
  columns = [[name.center(COLUMN, "-")] + textwrap.wrap(t.replace("\n", " "), COLUMN)
             for name, t in texts.items()]
  rows = itertools.zip_longest(*columns, fillvalue="")
  return "\n".join(" | ".join(cell.ljust(COLUMN) for cell in row) for row in rows)


def table(results: dict) -> str:
  base = results["off"].timing["tokens_per_s"]
  lines = ["| preset | tokens/s | time vs off | seq-rep-4 | mean strength | active | dead |",
           "|---|---|---|---|---|---|---|"]
  for name, g in results.items():
    s = g.summary()
    tps = g.timing["tokens_per_s"]
    strength = f"{s['mean_strength']:.3f}" if s else "-"
    active = f"{s['active']}/{s['attractors']}" if s else "-"
    dead = str(s["dead"]) if s else "-"
    lines.append(f"| {name} | {tps:.1f} | {base / tps:.3f}x | {seq_rep_n(g.tokens, 4):.3f} | "
                 f"{strength} | {active} | {dead} |")
  return "\n".join(lines)


def main():
  results = run()
  print(f"Prompt: {PROMPT}\n")
  print(side_by_side({name: g.text for name, g in results.items()}))
  print()
  print(table(results))
  print("\n(tokens/s excludes compilation; 'time vs off' is off's tokens/s over the preset's.)")


if __name__ == "__main__":
  main()
