"""`python -m experiments.report [--results DIR] [--out FILE]`: RESULTS.md from results/*.json."""

import argparse
import pathlib
import sys

from attractor_jax.errors import InputError
from experiments.report import write


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", default="results")
  parser.add_argument("--out", default="RESULTS.md")
  args = parser.parse_args(argv)
  if not pathlib.Path(args.results).is_dir():
    print(f"report: error: --results {args.results!r} is not a directory of result JSON files",
          file=sys.stderr)
    return 2
  try:
    write(args.results, args.out)
  except InputError as e:
    print(f"report: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
