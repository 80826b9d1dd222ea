"""The suite: E1-E6, last-word cloze, bench, report. `python -m experiments.run_all [--quick]`.

The related-work memories (E7) and the calibration run on their own:
`bash experiments/e7_memories.sh`, `python -m experiments.calibrate`.

Experiments run two at a time, then the bench alone. Full mode writes results/*.json (E3
generation also writes the strength trajectories), RESULTS.md and results/run_all.json (the
wall time of each part); --quick (2 seeds, few items, one preset against off) writes to DIR
(default results/quick) and is what the test suite runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

from experiments import report
from attractor_jax.results import git_commit, machine_info, sources
from attractor_jax.writing import write_json_atomic

EXPERIMENTS = ("suite_recall", "e4_comprehension", "e3_generation", "e1_perplexity", "e5_sweeps",
               "e6_topics")  # longest first: both cores busy to the end


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out", default=None, help="results directory")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or ("results/quick" if args.quick else "results"))
  out.mkdir(parents=True, exist_ok=True)
  root = pathlib.Path(__file__).resolve().parent.parent
  flag = ["--quick"] if args.quick else []
  t0 = time.time()
  env = {**os.environ, "PYTHON": sys.executable, "RESULTS": str(out),
         "SEEDS": "2", "MAX_TOKENS": "256" if args.quick else "12288",
         "WINDOW": "128" if args.quick else "512",
         "PRESETS": "seed" if args.quick else "seed gated multiscale"}
  extra = {"e3_generation": ["--trajectories", str(out / "trajectories.json")]}

  def job(name):
    if name == "e1_perplexity":
      return name, ["bash", "experiments/e1_perplexity.sh"], env
    return name, [sys.executable, "-m", f"experiments.{name}", *flag, "--out",
                  str(out / f"{name}.json"), *extra.get(name, [])], None

  wall_s = _run([job(name) for name in EXPERIMENTS], root, at_once=2)
  t = time.time()  # the bench runs alone: it times things
  subprocess.run([sys.executable, "-m", "attractor_jax.cli", "bench", *flag, "--out",
                  str(out / "bench.json")], check=True, cwd=root)
  wall_s["bench"] = time.time() - t
  report.write(out, out / "RESULTS.md" if args.quick else "RESULTS.md")
  write_json_atomic(out / "run_all.json", {
      "quick": args.quick, "wall_s": time.time() - t0, "experiment_wall_s": wall_s,
      "experiments_at_once": 2, "git_commit": git_commit(),
      "machine": machine_info(), "sources": sources()})


def _run(jobs, root, at_once: int) -> dict[str, float]:
  """Runs (name, command, env) jobs in order, `at_once` at a time (the next starts when any
  ends); returns each one's wall seconds, which overlap. A failure stops the others (each job
  runs in its own process group, children included) and raises.

  Two at once finish sooner than one after another on 2 cores: much of each part is XLA
  compilation or small decode-step kernels, which keep one core busy. The bench runs alone.
  """
  pending, running, started, wall_s = list(jobs), {}, {}, {}
  try:
    while pending or running:
      if pending and len(running) < at_once:
        name, command, env = pending.pop(0)
        print(f"run_all: {name}", file=sys.stderr)
        started[name] = time.time()
        running[name] = subprocess.Popen(command, cwd=root, env=env, start_new_session=True)
        continue
      for name, proc in list(running.items()):
        if proc.poll() is None:
          continue
        del running[name]
        if proc.returncode != 0:
          raise subprocess.CalledProcessError(proc.returncode, name)
        wall_s[name] = time.time() - started[name]
      time.sleep(1)
  finally:
    for proc in running.values():
      os.killpg(proc.pid, signal.SIGTERM)
      proc.wait()
  return wall_s


if __name__ == "__main__":
  main()
