#!/usr/bin/env bash
# The dose study's figures through the suite (experiments/dose.py), first under the old
# policy against the files the old harness wrote (results/dose_<task>_<model>.json), then
# under the new policy, reusing the arms no policy changes. One ratio (default 0.1), both
# loops, the three presets and their controls (generation: seed and the average control), into
# results/dose_reproduction/ (resumable).
#     bash experiments/dose_reproduce.sh [model] [ratio]      (default smollm2-135m 0.1)
set -euo pipefail
model=${1:-smollm2-135m}
ratio=${2:-0.1}
dir=results/dose_reproduction
dose=(env PYTHONPATH=. .venv/bin/python -m experiments.dose --model "$model" --ratios "$ratio")
presets=(seed gated multiscale)
for task in kv ppl; do
  "${dose[@]}" --task "$task" --policy old --out "$dir/${task}_${model}_old.json" \
    --families "${presets[@]}" control:prompt control:average control:random positive:cache \
    --compare "results/dose_${task}_${model}.json"
done
for task in kv ppl; do
  "${dose[@]}" --task "$task" --policy new --out "$dir/${task}_${model}_new.json" \
    --families "${presets[@]}" control:average --reuse "$dir/${task}_${model}_old.json" \
    --compare "results/dose_${task}_${model}.json"
done
# generation: an arm takes 1.5-2.5 min, so off, seed, the average control and the cache only
"${dose[@]}" --task generation --policy old --out "$dir/generation_${model}_old.json" \
  --families seed control:average positive:cache \
  --compare "results/dose_generation_${model}.json"
