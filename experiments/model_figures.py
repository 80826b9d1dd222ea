"""A named model's load time, peak memory and logit distance from transformers, as README states.

    python -m experiments.model_figures --model qwen2.5-coder-1.5b
      ->  one JSON line: load_s, peak_rss_gb after load and after the first forward, and the
          largest |logit| difference from transformers' recorded float32 and float64 forward
          (tests/data/references/<model>.json, `experiments/record_references.py`)
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

import attractor_jax as aj
from experiments.record_references import reference_path


def peak_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  args = parser.parse_args(argv)
  start = time.time()
  model = aj.load(args.model)
  load_s, load_peak = time.time() - start, peak_gb()
  forward = json.loads(reference_path(args.model).read_text())["forward"]
  ours = np.asarray(model.logits([forward["ids"]]))[0][:, forward["vocab_ids"]]
  print(json.dumps({
      "model": args.model, "load_s": round(load_s, 1), "peak_rss_gb_load": round(load_peak, 1),
      "peak_rss_gb_forward": round(peak_gb(), 1),
      "max_diff_float32": float(np.abs(ours - np.asarray(forward["logits_float32"])).max()),
      "max_diff_float64": float(np.abs(ours - np.asarray(forward["logits_float64"])).max()),
      "max_abs_logit": float(np.abs(np.asarray(forward["logits_float64"])).max())}))


if __name__ == "__main__":
  main()
