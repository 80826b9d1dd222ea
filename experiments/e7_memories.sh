#!/usr/bin/env bash
# E7: the related-work memories (issue 6) through the same suite, each paired with off:
#   perplexity (E1's text and 24 windows)    -> results/e1_ppl_<memory>.json
#   long generations, 200 tokens (E3's 32 prompts, with presets seed and tuned for reference)
#                                            -> results/e7_generation.json
#   comprehension (E4's 240 stories)         -> results/e7_comprehension.json
#   topic switch / snap-back (E6's 30 pairs) -> results/e7_topics.json
# Every part runs at one commit, on the same tokens and items for every row. The five memories
# are deterministic (no random init), so perplexity and comprehension use one seed;
# generations and topics sample, 2 seeds. Preset tuned (the attractor layer at its calibrated
# alpha) runs in every part; E1's presets (seed, gated, multiscale) run beside it; preset seed's
# comprehension and snap-back rows are E4's and E6's (same items). Then
# `python -m experiments.report`.
# Environment overrides: MEMORIES, PYTHON, RESULTS.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${RESULTS:-results}
memories=${MEMORIES:-cache hopfield steering fastweights dynamic-eval}
list=$(echo "$memories" | tr ' ' ',')
PRESETS="seed gated multiscale tuned" PYTHON="$py" RESULTS="$out" bash experiments/e1_perplexity.sh
PRESETS="$memories" SEEDS=1 PYTHON="$py" RESULTS="$out" bash experiments/e1_perplexity.sh
"$py" -m experiments.e3_generation --presets "seed,tuned,$list" --tokens 200 \
    --out "$out/e7_generation.json"
"$py" -m experiments.e4_comprehension --presets "tuned,$list" --seeds 1 --out "$out/e7_comprehension.json"
"$py" -m experiments.e6_topics --presets "tuned,$list" --out "$out/e7_topics.json"
"$py" -m experiments.report --results "$out" --out "${REPORT:-RESULTS.md}"
