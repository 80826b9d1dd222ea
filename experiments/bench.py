"""Performance ratios (issue 7): `python experiments/bench.py [--quick]` -> results/bench.json + .md."""

import sys

from attractor_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["bench", *sys.argv[1:]]))
