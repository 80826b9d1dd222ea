"""Seed sweeps over several processes: JAX's runtime on localhost, 2 processes x 4 CPU devices.

Each process is `attractor-jax sweep` (`cli.main`) with `aj.load` handing back a tiny random
model; a sweep over 8 devices in 2 processes equals the same sweep in one process, process 0
alone writes and prints, a dead peer or an absent coordinator ends the others with one line
and status 2 in bounded time, and a rerun finishes a killed sweep from its finished batches.
"""

import dataclasses
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax import cli, distributed
from attractor_jax.errors import InputError
from conftest import child_env
from tiny_models import random_model

TINY = dict(vocab_size=300, width=32, num_heads=4, num_kv_heads=2, mlp_width=48, max_len=128,
            tie_embeddings=False, scale=0.02)
HEARTBEAT_S = 4
SWEEP = ["sweep", "--task", "generate", "--prompt", "Once upon a time", "--preset", "seed",
         "--seeds", "8", "--max-new-tokens", "16", "--temperature", "0.8", "--json",
         "--out", "out.json"]
BATCHED = ["--batch-size", "4", "--resume-dir", "batches"]  # 2 batches without, 2 with memory
# One process of a sweep: the CLI with a tiny model, preset seed on its layer 1 (of 2).
DRIVER = """
import sys
import attractor_jax as aj
from attractor_jax import cli
from test_distributed import tiny_model, tiny_seed
aj.load, aj.presets["seed"] = tiny_model, tiny_seed()
sys.exit(cli.main(sys.argv[1:]))
"""


def tiny_model(spec, dtype=None):
  return random_model(0, tokenizer=True, **TINY)


def tiny_seed():
  return dataclasses.replace(aj.presets["seed"], layer=1)


@pytest.fixture(autouse=True)
def no_jax_cluster_variables(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  """The sweep's result JSON from this (single-device) process."""
  out = tmp_path_factory.mktemp("one") / "out.json"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(aj, "load", tiny_model)
    mp.setitem(aj.presets, "seed", tiny_seed())
    assert cli.main([*SWEEP[:-1], str(out)]) == 0
  return json.loads(out.read_text())


class Processes:
  """Sweep processes started on localhost, killed at the end of the test if still running."""

  def __init__(self, tmp_path):
    self.tmp_path, self.running = tmp_path, []

  def start(self, argv, n=2):
    with socket.socket() as s:  # a free port for the coordinator
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    env = dict(child_env(devices=4), JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")
    started = []
    for i in range(n):
      cwd = self.tmp_path / f"p{i}"
      cwd.mkdir(exist_ok=True)
      with open(cwd / "stdout", "w") as out, open(cwd / "stderr", "w") as err:
        started.append(subprocess.Popen(
            [sys.executable, "-c", DRIVER, *argv, "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(n), "--process-id", str(i),
             "--heartbeat-timeout", str(HEARTBEAT_S)], cwd=cwd, env=env, stdout=out, stderr=err))
    self.running += started
    return started

  def output(self, i):
    return (self.tmp_path / f"p{i}" / "stdout").read_text(), \
        (self.tmp_path / f"p{i}" / "stderr").read_text()

  def kill_all(self):
    for p in self.running:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.fixture
def processes(tmp_path):
  procs = Processes(tmp_path)
  yield procs
  procs.kill_all()


def _assert_same_sweep(got: dict, want: dict):
  """Tokens (the tiny tokenizer's texts are the ids) and every metric exactly; memory to 1e-5."""
  assert (got["processes"], want["processes"]) == (2, 1)
  assert len(set(want["texts"])) == 8  # the seeds really differ
  for key in ("task", "seeds", "texts", "per_seed", "per_seed_off", "summary", "paired_vs_off"):
    assert got[key] == want[key], key
  assert [m.keys() for m in got["memory"]] == [m.keys() for m in want["memory"]]
  for g, w in zip(got["memory"], want["memory"]):
    for key, value in w.items():
      if isinstance(value, float):
        np.testing.assert_allclose(g[key], value, atol=1e-5, rtol=0, err_msg=key)
      else:
        assert g[key] == value, key


def _error_line(stderr: str) -> str:
  """The last line of stderr, the one error line: no traceback and no runtime log before it."""
  assert "Traceback" not in stderr, stderr[-3000:]
  assert not distributed._RUNTIME_LOG.search(stderr.encode()), stderr[-3000:]
  return stderr.strip().splitlines()[-1]


def _ended(pid: int, wait_s: float = 5) -> bool:
  """Whether process `pid` is gone or a zombie (within `wait_s`)."""
  deadline = time.monotonic() + wait_s
  while time.monotonic() < deadline:
    try:
      if pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
        return True
    except FileNotFoundError:
      return True
    time.sleep(0.05)
  return False


def test_cluster_from_flags_else_the_jax_environment():
  assert distributed.cluster(environ={}) is None
  want = distributed.Cluster("10.0.0.1:1234", 4, 3, init_timeout=5, heartbeat_timeout=7)
  assert distributed.cluster("10.0.0.1:1234", "4", "3", init_timeout=5, heartbeat_timeout=7,
                             environ={}) == want
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "1"}
  assert distributed.cluster(environ=env) == distributed.Cluster("10.0.0.1:1234", 4, 1)
  assert distributed.cluster(process_id="3", init_timeout=5, heartbeat_timeout=7,
                             environ=env) == want  # a flag wins over its variable
  assert str(want) == "process 3 of 4"
  with pytest.raises(InputError, match=r"JAX_NUM_PROCESSES='x': pass the process count"):
    distributed.cluster(environ={**env, "JAX_NUM_PROCESSES": "x"})


CLUSTER = ["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "1"]
BAD = [
    (["--coordinator", "127.0.0.1"], "--coordinator='127.0.0.1': pass HOST:PORT"),
    (["--coordinator", "h:99999"], "--coordinator='h:99999'"),
    (["--coordinator", ":80"], "--coordinator=':80'"),
    (["--num-processes", "0"], "--num-processes='0'"),
    (["--num-processes", "two"], "--num-processes='two'"),
    (["--process-id", "2"], "--process-id='2': pass this process's number, 0 to 1"),
    (["--process-id", "-1"], "--process-id='-1'"),
    (["--init-timeout", "0"], "--init-timeout=0"),
    (["--heartbeat-timeout", "0"], "--heartbeat-timeout=0"),
    (["--heartbeat-timeout", "soon"], "--heartbeat-timeout"),
]


@pytest.mark.parametrize("change,named", BAD, ids=[" ".join(c) for c, _ in BAD])
def test_bad_cluster_values_exit_2_with_one_line(capsys, change, named):
  flags = dict(zip(CLUSTER[::2], CLUSTER[1::2]))
  flags.update(zip(change[::2], change[1::2]))
  argv = ["sweep", "--task", "generate", "--prompt", "hi", *sum(flags.items(), ())]
  assert cli.main(argv) == 2
  out, err = capsys.readouterr()
  assert out == "" and len(err.strip().splitlines()) == 1 and named in err, err


@pytest.mark.parametrize("argv,named", [
    (["--coordinator", "127.0.0.1:1234"],
     "--num-processes (or JAX_NUM_PROCESSES), --process-id (or JAX_PROCESS_ID) as well"),
    (["--task", "ppl", "--text-file", __file__, *CLUSTER], "task 'generate' only"),
], ids=["partial", "ppl"])
def test_partial_cluster_and_task_ppl_are_refused(capsys, monkeypatch, argv, named):
  monkeypatch.setenv("JAX_PROCESS_ID", "")  # empty: not set
  args = ["sweep", *([] if "--task" in argv else ["--task", "generate", "--prompt", "hi"]), *argv]
  assert cli.main(args) == 2
  out, err = capsys.readouterr()
  assert out == "" and len(err.strip().splitlines()) == 1 and named in err, err


def test_unreachable_coordinator_exits_2_naming_it(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens there once closed
  env = child_env()
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-m", "attractor_jax.cli", "sweep", "--task", "generate",
                        "--prompt", "hi", "--coordinator", address, "--num-processes", "2",
                        "--process-id", "1", "--init-timeout", "1"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
  took = time.monotonic() - start
  assert out.returncode == 2 and out.stdout == "", out
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert f"coordinator {address} within 1 s (--init-timeout)" in out.stderr
  assert took < 30, took  # JAX gives up ~5 s after the init timeout


def test_two_processes_equal_one_and_only_process_0_writes(processes, one_process):
  procs = processes.start(SWEEP)
  for p in procs:
    assert p.wait(timeout=240) == 0, processes.output(procs.index(p))
  got = json.loads((processes.tmp_path / "p0" / "out.json").read_text())
  _assert_same_sweep(got, one_process)
  printed, _ = processes.output(0)
  assert json.loads(printed) == {k: v for k, v in got.items() if k != "written_by"}
  assert processes.output(1)[0] == ""  # stdout is the result alone: the runtime prints to stderr
  assert not (processes.tmp_path / "p1" / "out.json").exists()


def test_killed_process_stops_the_other_and_a_rerun_completes(processes, one_process):
  batches = processes.tmp_path / "p0" / "batches"
  procs = processes.start(SWEEP + BATCHED)
  deadline = time.monotonic() + 240
  while len(list(batches.glob("seeds-*"))) < 2:  # both batches without memory are done
    assert time.monotonic() < deadline and procs[0].poll() is None, processes.output(0)
    time.sleep(0.05)
  kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in batches.glob("seeds-*")}
  children = [int(k) for k in pathlib.Path(f"/proc/{procs[1].pid}/task/{procs[1].pid}/children")
              .read_text().split()]
  assert len(children) == 1  # the supervised child that runs the sweep
  os.kill(procs[1].pid, signal.SIGKILL)  # before the batches with memory are done
  start = time.monotonic()
  assert procs[0].wait(timeout=60) == 2
  took = time.monotonic() - start
  assert took < HEARTBEAT_S + 5, took
  line = _error_line(processes.output(0)[1])
  assert re.match("attractor-jax: error: process 0 of 2 stopped: (process 1 sent no heartbeat "
                  f"for {HEARTBEAT_S} s|another process closed its connection: it died)",
                  line), line
  assert processes.output(0)[0] == "" and not (processes.tmp_path / "p0" / "out.json").exists()
  assert _ended(children[0])  # the killed process's child died with it

  procs = processes.start(SWEEP + BATCHED)  # the same command again
  for p in procs:
    assert p.wait(timeout=240) == 0, processes.output(procs.index(p))
  _assert_same_sweep(json.loads((processes.tmp_path / "p0" / "out.json").read_text()),
                     one_process)
  now = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in batches.glob("seeds-*")}
  assert len(now) == 4 and {k: now[k] for k in kept} == kept  # only the missing 2 were run
  assert not (processes.tmp_path / "p1" / "batches").exists()
