"""The `attractor-jax` command: generate, ppl, sweep, bench, eval. `--json` prints one JSON object.

Bad input exits with status 2 and one line on stderr naming the value; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from attractor_jax import compile_cache, distributed
from attractor_jax.errors import InputError
from attractor_jax.model import DEFAULT_MODEL, MODEL_NAMES

MODEL_HELP = ", ".join(MODEL_NAMES) + ", a .gguf, an HF dir or a hub id"


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one line and exit status 2."""

  def error(self, message):
    raise InputError(message)


def _add_model(p):
  p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
  p.add_argument("--preset", default="off", help="off (no memory); the attractor layer: seed, "
                 "gated, multiscale, tuned; related work: cache, hopfield, steering, fastweights, "
                 "dynamic-eval")
  p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _add_generate_options(p):
  p.add_argument("--prompt", required=True)
  p.add_argument("--max-new-tokens", type=int, default=200)
  p.add_argument("--temperature", type=float, default=0.0)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")


def _add_ppl_options(p):
  p.add_argument("--text-file", required=True)
  p.add_argument("--window", type=int, default=512)
  p.add_argument("--max-tokens", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="attractor-jax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  gen = sub.add_parser("generate", help="generate text with a memory preset")
  _add_model(gen)
  _add_generate_options(gen)
  gen.add_argument("--seed", type=int, default=0)
  gen.add_argument("--save-state", help="directory to save the final memory state to")
  gen.add_argument("--load-state", help="directory of a saved memory state to continue from")
  ppl = sub.add_parser("ppl", help="perplexity, baseline and with a memory preset")
  _add_model(ppl)
  _add_ppl_options(ppl)
  ppl.add_argument("--seeds", type=int, default=1)
  sw = sub.add_parser("sweep", help="one vmapped call over seeds, paired against preset off")
  _add_model(sw)
  sw.add_argument("--task", choices=("generate", "ppl"), required=True)
  sw.add_argument("--seeds", type=int, default=8)
  sw.add_argument("--prompt")
  sw.add_argument("--max-new-tokens", type=int, default=200)
  sw.add_argument("--temperature", type=float, default=0.0)
  sw.add_argument("--top-p", type=float, default=1.0)
  sw.add_argument("--text-file")
  sw.add_argument("--window", type=int, default=512)
  sw.add_argument("--max-tokens", type=int, default=None)
  sw.add_argument("--out", help="write the result JSON here (atomically)")
  sw.add_argument("--batch-size", type=int, default=None,
                  help="seeds per vmapped call (task generate; default: all in one call)")
  sw.add_argument("--resume-dir", help="keep finished seed batches here; a rerun reuses them")
  sw.add_argument("--coordinator", metavar="HOST:PORT",
                  help="several processes share the sweep: process 0's address and a free port "
                  "(or JAX_COORDINATOR_ADDRESS)")
  sw.add_argument("--num-processes", metavar="N", help="how many (or JAX_NUM_PROCESSES)")
  sw.add_argument("--process-id", metavar="I", help="this one's number, 0 to N-1 "
                  "(or JAX_PROCESS_ID); process 0 writes --out and --resume-dir and prints")
  sw.add_argument("--init-timeout", type=int, default=distributed.INIT_TIMEOUT_S,
                  metavar="SECONDS",
                  help="wait this long for every process to connect (default %(default)s)")
  sw.add_argument("--heartbeat-timeout", type=int, default=distributed.HEARTBEAT_TIMEOUT_S,
                  metavar="SECONDS",
                  help="a process silent this long stops them all (default %(default)s)")
  bench = sub.add_parser("bench", help="performance ratios vs transformers and the bandwidth limit")
  bench.add_argument("--model", default=DEFAULT_MODEL,
                     help=MODEL_HELP + "; transformers is compared when it loads the same GGUF")
  bench.add_argument("--quick", action="store_true", help="a short smoke run (schema only)")
  bench.add_argument("--out", default="results/bench.json")
  bench.add_argument("--json", action="store_true")
  ev = sub.add_parser("eval", help="the benchmark suite's verdict on a memory (a scorecard)")
  ev.add_argument("--memory", required=True,
                  help="a preset name, package.module:Class or path/file.py:Class")
  ev.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
  ev.add_argument("--quick", action="store_true", help="a small design: a smoke run (~3 min)")
  ev.add_argument("--out", help="directory for the scorecard and finished arms (resumable)")
  ev.add_argument("--grid", nargs="+", default=[], metavar="FIELD=V1,V2",
                  help="calibrate the memory over these values on the calibration split")
  ev.add_argument("--reuse", metavar="DIR",
                  help="copy the arms that do not depend on the memory (off, the cache grid, "
                       "the positive control) from an earlier eval's --out of the same model")
  ev.add_argument("--tasks", help="the tasks to run, comma-separated (default: all: recall, "
                                  "perplexity, generation, comprehension)")
  ev.add_argument("--json", action="store_true", help="print the scorecard as JSON")
  return parser


def read_text_file(path: str) -> str:
  """Reads a UTF-8 text file, refusing missing, unreadable, non-UTF-8 or empty files."""
  p = pathlib.Path(path)
  try:
    text = p.read_bytes().decode("utf-8")
  except FileNotFoundError:
    raise InputError(f"--text-file {path!r} does not exist: pass a UTF-8 text file") from None
  except (IsADirectoryError, PermissionError) as e:
    raise InputError(f"--text-file {path!r} cannot be read ({type(e).__name__})") from None
  except UnicodeDecodeError as e:
    raise InputError(f"--text-file {path!r} is not UTF-8 (byte {e.start}): convert it to UTF-8") \
        from None
  if not text.strip():
    raise InputError(f"--text-file {path!r} is empty: pass a file with text")
  return text


def _generate(args) -> dict:
  import attractor_jax as aj
  from attractor_jax import checkpoint, writing
  from attractor_jax.sampling import check_sampling
  from attractor_jax.seeds import seed_keys

  memory = aj.get_preset(args.preset)
  check_sampling(args.max_new_tokens, args.temperature, args.top_p)
  seed_keys(args.seed)
  if memory is None and (args.load_state or args.save_state):
    raise InputError("--load-state and --save-state need a memory: pass a --preset other than off")
  if args.save_state:  # refused before any work when it would replace what is not ours
    writing.claim(args.save_state, checkpoint.is_our_checkpoint, "checkpoint")
  state = None
  if args.load_state:
    state = aj.restore_state(args.load_state, memory=memory, model=args.model).state
  model = aj.load(args.model)
  g = aj.generate(model, args.prompt, args.max_new_tokens, memory=memory, seed=args.seed,
                  temperature=args.temperature, top_p=args.top_p, state=state, chat=args.chat)
  if args.save_state:
    aj.save_state(args.save_state, g.state, memory=memory, model=model, preset=args.preset,
                  position=int(g.run.position[0]),
                  sample_key_data=g.sample_key.tolist())
  return {**g.to_json(), "preset": args.preset, "model": args.model}


def _ppl(args) -> dict:
  import attractor_jax as aj

  from attractor_jax.seeds import seed_list

  memory = aj.get_preset(args.preset)
  seed_list(args.seeds)
  text = read_text_file(args.text_file)
  model = aj.load(args.model)
  out = aj.perplexity(model, text, args.window, args.max_tokens, memory=memory, seeds=args.seeds)
  return {"preset": args.preset, "model": args.model, **out.to_json()}


def _cluster(args) -> distributed.Cluster | None:
  """The processes a sweep is shared by (None: this one alone)."""
  if args.command != "sweep":
    return None
  found = distributed.cluster(args.coordinator, args.num_processes, args.process_id,
                              init_timeout=args.init_timeout,
                              heartbeat_timeout=args.heartbeat_timeout)
  if found is not None and args.task != "generate":
    raise InputError("several processes run task 'generate' only: run task 'ppl' in one process")
  return found


def _sweep(args) -> dict | None:
  from tqdm import tqdm

  import attractor_jax as aj
  from attractor_jax import writing
  from attractor_jax.results import provenance
  from attractor_jax.sampling import check_sampling
  from attractor_jax.seed_sweep import check_batch_size, is_resume_dir
  from attractor_jax.seeds import seed_list

  cluster = args.cluster
  main = cluster is None or cluster.process_id == 0  # the one process that writes and reports
  if args.out and main:  # refused before any work when it would replace a file that is not ours
    writing.claim(args.out, writing.is_our_json, "result")
  if args.resume_dir and main:
    writing.claim(args.resume_dir, is_resume_dir, "finished seed batches")
  memory = aj.get_preset(args.preset)
  n_seeds = len(seed_list(args.seeds))
  per_call = check_batch_size(args.batch_size, n_seeds)
  if args.task == "generate":
    check_sampling(args.max_new_tokens, args.temperature, args.top_p)
  text = read_text_file(args.text_file) if args.text_file else None
  if cluster is not None:
    distributed.initialize(cluster)
  t0 = time.time()
  model = aj.load(args.model)
  # Shown from the first finished batch on (delay), so bad input still prints one line only.
  with tqdm(total=2 * n_seeds, desc=f"{args.task}: off, then {args.preset}, {per_call} seeds "
            "per call", unit="seed", file=sys.stderr, delay=0.1, disable=not main) as bar:
    result = aj.sweep(model, args.task, memory=memory, seeds=args.seeds, prompt=args.prompt,
                   max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_p=args.top_p, text=text, window=args.window, max_tokens=args.max_tokens,
                   batch_size=args.batch_size, resume_dir=args.resume_dir, progress=bar.update)
  if not main:
    return None
  result = {"preset": args.preset, "model": args.model, **result.to_json(),
            "processes": 1 if cluster is None else cluster.num_processes,
            **provenance(time.time() - t0)}
  if args.out:
    writing.write_json_atomic(args.out, result)
  return result


def _bench(args) -> dict:
  from attractor_jax import bench, writing

  markdown_path = pathlib.Path(args.out).with_suffix(".md")
  writing.claim(args.out, writing.is_our_json, "bench result")
  writing.claim(markdown_path, writing.first_line_is(bench.MARKDOWN_HEADER), "bench table")
  result = bench.run(args.model, quick=args.quick,
                     progress=lambda msg: print(f"bench: {msg}", file=sys.stderr))
  writing.write_json_atomic(args.out, result)
  writing.write_text_atomic(markdown_path, bench.markdown(result) + "\n",
                            first_line=bench.MARKDOWN_HEADER)
  return result


def _grid(pairs: list[str], memory) -> dict:
  """--grid FIELD=V1,V2 ... as {field: [values]}, each value of the field's type."""
  import dataclasses

  fields = {f.name: f for f in dataclasses.fields(memory)}
  grid = {}
  for pair in pairs:
    name, _, values = pair.partition("=")
    if name not in fields or not values:
      raise InputError(f"--grid {pair!r}: give FIELD=V1,V2 with a field of "
                       f"{type(memory).__name__} ({', '.join(fields)})")
    kind = type(getattr(memory, name))
    try:
      grid[name] = [kind(v) for v in values.split(",")]
    except ValueError:
      raise InputError(f"--grid {pair!r}: values must be {kind.__name__}") from None
  return grid


def _eval(args) -> dict | None:
  import attractor_jax as aj
  from attractor_jax import suite

  from attractor_jax.suite.store import refuse_foreign

  memory = suite.load_memory(args.memory)
  grid = _grid(args.grid, memory)
  tasks = list(suite.TASKS) if args.tasks is None else args.tasks.split(",")
  unknown = [t for t in tasks if t not in suite.TASKS]
  if unknown or not tasks:
    raise InputError(f"--tasks {args.tasks!r}: give tasks of {', '.join(suite.TASKS)}, "
                     "comma-separated")
  if args.out:
    refuse_foreign(args.out)
  model = aj.load(args.model)
  card = suite.evaluate(model, memory, memory_name=args.memory, tasks=tasks, quick=args.quick,
                        out=args.out, grid=grid, reuse=args.reuse, progress=not args.json)
  if args.json:
    return json.loads(card.to_json())
  print(card.to_markdown())
  return None


_COMMANDS = {"generate": _generate, "ppl": _ppl, "sweep": _sweep, "bench": _bench, "eval": _eval}


def main(argv=None) -> int:
  try:
    args = build_parser().parse_args(argv)
    args.cluster = _cluster(args)
  except InputError as e:
    print(f"attractor-jax: error: {e}", file=sys.stderr)
    return 2
  compile_cache.enable()
  if args.cluster is None:
    return _run(args)
  return distributed.supervised(lambda: _run(args), args.cluster)


def _run(args) -> int:
  """Runs the command and prints its result (a sweep's processes other than 0 print nothing)."""
  try:
    result = _COMMANDS[args.command](args)
  except InputError as e:
    print(f"attractor-jax: error: {e}", file=sys.stderr)
    return 2
  if result is None:
    return 0
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key}: {value}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
