"""Orbax saves that fail quietly: a failed save (a full disk) raises, and prints nothing.

orbax 0.12 always writes in background threads, each with its own event loop; see
`failures_left_to_the_caller`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading


class _DrainingLoops(asyncio.DefaultEventLoopPolicy):
  """Event loops that run their pending tasks to the end before they close."""

  def new_event_loop(self):
    loop = super().new_event_loop()
    close = loop.close

    def drain_and_close():
      pending = asyncio.all_tasks(loop)
      if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
      close()

    loop.close = drain_and_close
    return loop


_SAVING = threading.Lock()  # the settings below are process-wide: one save at a time


@contextlib.contextmanager
def failures_left_to_the_caller():
  """A failed save (a full disk) prints nothing: it raises, for `writing.reported` to name.

  orbax 0.12 always writes in background threads, each with its own event loop. When a
  write fails, the thread logs it with a traceback, and its loop closes with other writes
  pending, which later report "Event loop is closed" or "exception was never retrieved"
  (or write after the temporaries were removed). Here the loops made during the save
  finish their pending writes before closing, orbax's thread tracebacks are not logged (the
  save raises the same error), and the save returns once orbax's threads have ended.
  """
  with _SAVING:
    started = set(threading.enumerate())
    absl, policy = logging.getLogger("absl"), asyncio.get_event_loop_policy()
    absl.addFilter(_not_from_orbax_thread)
    asyncio.set_event_loop_policy(_DrainingLoops())
    try:
      yield
    finally:
      for thread in set(threading.enumerate()) - started:
        if type(thread).__module__.startswith("orbax."):
          threading.Thread.join(thread)  # orbax's own join re-raises the thread's error
      asyncio.set_event_loop_policy(policy)
      absl.removeFilter(_not_from_orbax_thread)


def _not_from_orbax_thread(record: logging.LogRecord) -> bool:
  return not (record.exc_info and "orbax" in record.pathname)
