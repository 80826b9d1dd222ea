#!/usr/bin/env bash
# E1 (partial): perplexity change with the layer updating token by token, 8 seeds in one
# vmapped call, first 2,048 tokens of Pride and Prejudice from "It is a truth", 512-token windows.
set -euo pipefail
cd "$(dirname "$0")/.."
text=$(mktemp)
.venv/bin/python -c "from attractor_jax.data import pride_and_prejudice_from_truth as t; print(t(), end='')" > "$text"
for preset in ${PRESETS:-seed gated multiscale}; do
  .venv/bin/attractor-jax sweep --task ppl --preset "$preset" --seeds 8 --text-file "$text" \
      --window 512 --max-tokens 2048 --out "results/e1_ppl_${preset}.json" --json > /dev/null
done
rm -f "$text"
