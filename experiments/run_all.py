"""The suite: E1-E6, trajectories, bench and the report. `python -m experiments.run_all [--quick]`.

The related-work memories (E7) and the calibration run on their own:
`bash experiments/e7_memories.sh`, `python -m experiments.calibrate`.

Full mode writes results/*.json and RESULTS.md (about 75 minutes on 2 CPU cores); --quick
(2 seeds, few items, one preset against off) writes to DIR (default results/quick) and is
what the test suite runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

from attractor_jax import report

PY_EXPERIMENTS = ("e3_generation", "e3_fact_recall", "e4_comprehension", "suite_recall",
                  "e5_sweeps", "e6_topics", "trajectories")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default=None, help="results directory")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or ("results/quick" if args.quick else "results"))
  out.mkdir(parents=True, exist_ok=True)
  root = pathlib.Path(__file__).resolve().parent.parent
  flag = ["--quick"] if args.quick else []
  for name in PY_EXPERIMENTS:
    print(f"run_all: {name}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", f"experiments.{name}", *flag, "--out",
                    str(out / f"{name}.json")], check=True, cwd=root)
  env = {**os.environ, "PYTHON": sys.executable, "RESULTS": str(out),
         "SEEDS": "2" if args.quick else "8", "MAX_TOKENS": "256" if args.quick else "2048",
         "WINDOW": "128" if args.quick else "512",
         "PRESETS": "seed" if args.quick else "seed gated multiscale"}
  print("run_all: e1_perplexity", file=sys.stderr)
  subprocess.run(["bash", "experiments/e1_perplexity.sh"], check=True, cwd=root, env=env)
  subprocess.run([sys.executable, "-m", "attractor_jax.cli", "bench", *flag, "--out",
                  str(out / "bench.json")], check=True, cwd=root)
  report.write(out, out / "RESULTS.md" if args.quick else "RESULTS.md")


if __name__ == "__main__":
  main()
