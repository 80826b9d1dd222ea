"""One seed sweep over several processes (hosts) with JAX's multi-process runtime.

The processes are named by flags or JAX's environment variables (`cluster`). JAX's runtime
ends a process by itself when a peer stops sending heartbeats or the coordinator goes away
(a C++ abort with a multi-line log, which Python cannot catch), so the work runs in a child
process (`supervised`) and the process that was started turns that end into one line and
exit status 2, within the heartbeat timeout.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import signal
import sys
import traceback
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from attractor_jax.errors import InputError
from attractor_jax.validation import check_int

INIT_TIMEOUT_S = 60  # every process must have connected to the coordinator by then
HEARTBEAT_TIMEOUT_S = 10  # a process silent this long is taken for dead, and all stop

_FLAGS = {"coordinator": "--coordinator", "num_processes": "--num-processes",
          "process_id": "--process-id"}
_ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}
# A line of the runtime's own (C++) log: severity, date, time, thread, file:line].
_RUNTIME_LOG = re.compile(rb"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """This process's place among `num_processes` that share one sweep."""

  coordinator: str  # HOST:PORT of process 0, where the runtime's coordinator listens
  num_processes: int
  process_id: int
  init_timeout: int = INIT_TIMEOUT_S
  heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S

  def __str__(self):
    return f"process {self.process_id} of {self.num_processes}"


def cluster(coordinator: str | None = None, num_processes: str | None = None,
            process_id: str | None = None, *, init_timeout: int = INIT_TIMEOUT_S,
            heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S, environ=os.environ) -> Cluster | None:
  """The processes named by the flags, each missing one taken from JAX's environment variable
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); None when none is named (one
  process). InputError naming the flag or variable when one is bad or missing."""
  values, names = {}, {}
  for field, value in (("coordinator", coordinator), ("num_processes", num_processes),
                       ("process_id", process_id)):
    from_env = value is None and bool(environ.get(_ENV[field]))
    values[field] = environ[_ENV[field]] if from_env else value
    names[field] = _ENV[field] if from_env else _FLAGS[field]
  missing = [f"{_FLAGS[f]} (or {_ENV[f]})" for f, v in values.items() if v is None]
  if len(missing) == len(values):
    return None
  if missing:
    raise InputError(f"several processes need {', '.join(missing)} as well")
  host, _, port = values["coordinator"].rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise InputError(f"{names['coordinator']}={values['coordinator']!r}: pass HOST:PORT, the "
                     "address of process 0 and a free port on it (e.g. 10.0.0.1:1234)")
  n = _integer(names["num_processes"], values["num_processes"], 1, None, "the process count")
  i = _integer(names["process_id"], values["process_id"], 0, n - 1, "this process's number")
  check_int("--init-timeout", init_timeout, 1)
  check_int("--heartbeat-timeout", heartbeat_timeout, 1)
  return Cluster(values["coordinator"], n, i, init_timeout, heartbeat_timeout)


def _integer(name: str, text: str, lo: int, hi: int | None, what: str) -> int:
  if not re.fullmatch(r"\s*\d+\s*", str(text)) or int(text) < lo or (hi is not None and
                                                                    int(text) > hi):
    bound = f"{lo} to {hi}" if hi is not None else f"an integer >= {lo}"
    raise InputError(f"{name}={text!r}: pass {what}, {bound}")
  return int(text)


def initialize(c: Cluster):
  """Starts JAX's runtime for this process: `jax.devices()` then lists every process's devices
  (CPU devices of different processes exchange data through gloo)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(c.coordinator, c.num_processes, c.process_id,
                             initialization_timeout=c.init_timeout,
                             heartbeat_timeout_seconds=c.heartbeat_timeout,
                             shutdown_timeout_seconds=c.init_timeout)


def is_main() -> bool:
  """Whether this is process 0, the one that writes and reports (True in a single process)."""
  return jax.process_index() == 0


def from_main(read: Callable[[], bytes | None]) -> bytes | None:
  """`read()` run on process 0 only, its bytes (or None) handed to every process."""
  if jax.process_count() == 1:
    return read()
  data = read() if is_main() else None
  size = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if data is None else len(data))))
  if size < 0:
    return None
  buf = np.frombuffer(data, np.uint8) if is_main() else np.zeros(size, np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes()


def supervised(work: Callable[[], int], c: Cluster) -> int:
  """Runs `work()` (which returns an exit status) in a child process and returns its status.

  The child's stdout is the result alone (the runtime's prints go to stderr); its stderr is
  passed on until the runtime's own log begins. If the child then fails, or is killed, one
  line says why and 2 is returned; after a success the held-back log follows. The child dies
  with this process.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  read_fd, write_fd = os.pipe()
  parent = os.getpid()
  pid = os.fork()
  if pid == 0:
    os.close(read_fd)
    _die_with(parent)
    result = os.dup(1)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    sys.stdout = os.fdopen(result, "w")
    code = 1
    try:
      code = work()
      if code == 0:
        jax.distributed.shutdown()
    except jax.errors.JaxRuntimeError as e:  # a collective failed (a peer's connection closed)
      print(_stopped(c, _cause(str(e), c)), file=sys.stderr)
      code = 2
    except BaseException:
      traceback.print_exc()
      code = 1
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)
  os.close(write_fd)
  interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the child's to handle
  try:
    rest, log_began, fresh_line = _relay(read_fd)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
  finally:
    signal.signal(signal.SIGINT, interrupt)
  text = rest.decode(errors="replace")
  ours = re.findall(r"^attractor-jax: error: .*$", text, re.M)
  if code < 0 or (code and log_began and ours):
    line = ours[-1] if ours else _stopped(c, _cause(text, c) or
                                          f"killed by {signal.Signals(-code).name}")
    print(("" if fresh_line else "\n") + line, file=sys.stderr)
    return 2
  sys.stderr.buffer.write(rest)
  return code


def _die_with(parent: int):
  """Has the kernel kill this process when `parent` dies (Linux PR_SET_PDEATHSIG)."""
  prctl = getattr(ctypes.CDLL(None), "prctl", None)
  if prctl is not None:
    prctl(1, signal.SIGKILL)
  if os.getppid() != parent:
    os._exit(1)


def _relay(fd: int) -> tuple[bytes, bool, bool]:
  """Copies `fd` to stderr line by line until the runtime's log begins. Returns the rest,
  whether the log began, and whether what was copied ends a line."""
  held, pending, fresh_line = None, b"", True
  while chunk := os.read(fd, 1 << 16):
    if held is not None:
      held += chunk
      continue
    *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
    for k, line in enumerate(lines):
      log = _RUNTIME_LOG.search(line)  # a progress bar may precede it on the line
      if log:
        line, held = line[:log.start()], line[log.start():] + b"".join(lines[k + 1:]) + pending
      if line:
        sys.stderr.buffer.write(line)
        fresh_line = line.endswith(b"\n")
      if log:
        break
    sys.stderr.flush()
  os.close(fd)
  return (pending, False, fresh_line) if held is None else (held, True, fresh_line)


def _stopped(c: Cluster, cause: str) -> str:
  return (f"attractor-jax: error: {c} stopped: {cause}; start the same command on every "
          "process again (finished seed batches in --resume-dir are kept)")


def _cause(log: str, c: Cluster) -> str | None:
  """Why the runtime ended a process, from its log or error, in a few words."""
  dead = re.search(r"stopped sending heartbeats\):\s*(\d[\d, ]*)", log)
  if dead:
    return (f"process {dead[1].strip()} sent no heartbeat for {c.heartbeat_timeout} s "
            "(--heartbeat-timeout): it died or cannot be reached")
  if "Connection closed by peer" in log or "Connection reset by peer" in log:
    return "another process closed its connection: it died"
  if "RegisterTask" in log:
    return (f"not all {c.num_processes} processes reached the coordinator {c.coordinator} "
            f"within {c.init_timeout} s (--init-timeout)")
  if re.search(r"Socket closed|Connection refused|UNAVAILABLE", log):
    return f"the coordinator {c.coordinator} went away (process 0 stopped)"
  line = re.search(r"^F\d{4} [^\]]*\] (.+)$", log, re.M) or re.search(r"(.+)", log)
  return line[1][:200] if line else None
