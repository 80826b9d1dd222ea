"""The suite runner: jobs two at a time, wall times, and a failure stopping the rest."""

import subprocess
import time

import pytest

from experiments.run_all import _run


def test_jobs_run_two_at_a_time_and_report_each_wall_time(tmp_path):
  log = tmp_path / "log"
  job = lambda name: (name, ["bash", "-c", f"echo start {name} >> {log}; sleep 1; "
                                           f"echo end {name} >> {log}"], None)
  wall_s = _run([job("a"), job("b"), job("c")], tmp_path, at_once=2)
  assert set(wall_s) == {"a", "b", "c"} and all(s >= 1 for s in wall_s.values())
  events = log.read_text().splitlines()
  assert sorted(events[:2]) == ["start a", "start b"]  # two at once
  assert events.index("start c") > min(events.index("end a"), events.index("end b"))


def test_a_failed_job_raises_and_stops_the_running_one_with_its_children(tmp_path):
  mark = tmp_path / "finished"
  slow = ["bash", "-c", f"(sleep 2; touch {mark}) & wait"]  # the work is in a child process
  with pytest.raises(subprocess.CalledProcessError, match="bad"):
    _run([("slow", slow, None), ("bad", ["false"], None)], tmp_path, at_once=2)
  time.sleep(3)
  assert not mark.exists()
