#!/usr/bin/env bash
# E7: the related-work memories (issue 6) through the same suite, each paired with off:
#   perplexity (E1's text and windows)       -> results/e1_ppl_<memory>.json
#   the cache's perplexity on 8,192 tokens (16 windows, for a CI over more windows)
#                                            -> results/e7_ppl_cache_long.json
#   long generations, 200 tokens (E3's prompts, with presets seed and tuned for reference)
#                                            -> results/e7_generation.json
#   comprehension (E4's items)               -> results/e7_comprehension.json
#   topic switch / snap-back (E6's prompts)  -> results/e7_topics.json
# The five memories are deterministic (no random init), so perplexity and comprehension use
# one seed; generations sample, so they keep 8 seeds. Preset tuned (the attractor layer at its
# calibrated alpha) runs beside them with 8 seeds (perplexity, generations, topics). Then
# `python -m experiments.report`.
# Environment overrides: MEMORIES, PYTHON, RESULTS.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${RESULTS:-results}
memories=${MEMORIES:-cache hopfield steering fastweights dynamic-eval}
list=$(echo "$memories" | tr ' ' ',')
PRESETS=tuned SEEDS=8 PYTHON="$py" RESULTS="$out" bash experiments/e1_perplexity.sh
PRESETS="$memories" SEEDS=1 PYTHON="$py" RESULTS="$out" bash experiments/e1_perplexity.sh
text=$(mktemp)
trap 'rm -f "$text"' EXIT
"$py" -c "from attractor_jax.data import pride_and_prejudice_from_truth as t; print(t(), end='')" > "$text"
"$py" -m attractor_jax.cli sweep --task ppl --preset cache --seeds 1 --text-file "$text" \
    --window 512 --max-tokens 8192 --out "$out/e7_ppl_cache_long.json" --json > /dev/null
"$py" -m experiments.e3_generation --presets "seed,tuned,$list" --tokens 200 \
    --out "$out/e7_generation.json"
"$py" -m experiments.e4_comprehension --presets "$list" --seeds 1 --out "$out/e7_comprehension.json"
"$py" -m experiments.e6_topics --presets "tuned,$list" --out "$out/e7_topics.json"
"$py" -m experiments.report --results "$out" --out "${REPORT:-RESULTS.md}"
