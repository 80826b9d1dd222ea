#!/usr/bin/env bash
# E1: perplexity change with the layer updating token by token, 2 seeds in one vmapped call
# (seeds vary only the memory's initial noise: compute goes to windows, the clusters),
# first 12,288 tokens of Pride and Prejudice from "It is a truth": 24 windows of 512 tokens
# (the CI resamples windows; the memory's state carries from one window to the next).
# Environment overrides: PRESETS, SEEDS, MAX_TOKENS, WINDOW, RESULTS (directory).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
text=$(mktemp)
trap 'rm -f "$text"' EXIT
"$py" -c "from attractor_jax.data import pride_and_prejudice_from_truth as t; print(t(), end='')" > "$text"
for preset in ${PRESETS:-seed gated multiscale}; do
  "$py" -m attractor_jax.cli sweep --task ppl --preset "$preset" --seeds "${SEEDS:-2}" \
      --text-file "$text" --window "${WINDOW:-512}" --max-tokens "${MAX_TOKENS:-12288}" \
      --out "${RESULTS:-results}/e1_ppl_${preset}.json" --json > /dev/null
done
