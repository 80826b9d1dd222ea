#!/usr/bin/env bash
# The suite's full scorecards (attractor-jax eval) for seed, gated, cache and the custom-memory
# example, into results/scorecards/<memory>_<model>/ (resumable: rerun to finish a killed one).
# The first runs every arm; the others reuse its memory-independent arms (off, the cache grid,
# the positive control), so each scorecard's arm_seconds is its standalone cost.
#     bash experiments/scorecards.sh [model]      (default smollm2-135m)
set -euo pipefail
model=${1:-smollm2-135m}
eval_=(.venv/bin/attractor-jax eval --model "$model")
first=results/scorecards/seed_$model
"${eval_[@]}" --memory seed --out "$first"
for memory in gated cache examples/custom_memory.py:AverageConfig; do
  name=$(basename "${memory%%:*}" .py)
  "${eval_[@]}" --memory "$memory" --out "results/scorecards/${name}_$model" --reuse "$first"
done
