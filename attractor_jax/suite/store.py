"""An eval's output directory: finished arms kept atomically, so a killed eval resumes.

`manifest.json` names the design and every file eval wrote; a directory holding files eval
did not write, or an eval of another design, is refused before anything is written. Arms
that do not depend on the memory (off, the cache grid, the positive control) can be copied
from another eval of the same model and cluster design (`reuse`), each marked with its source.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from attractor_jax.errors import InputError
from attractor_jax.suite.tasks import Measured
from attractor_jax.writing import write_json_atomic, write_png_atomic, write_text_atomic

MANIFEST = "manifest.json"
MARKDOWN_FIRST_LINE = "<!-- written by attractor-jax eval -->"


class Store:
  """Finished arms by key "<task>/<split>/<arm>", in `out` (None: kept in memory only)."""

  def __init__(self, out, design: dict, reuse=None):
    design = json.loads(json.dumps(design))  # as the manifest holds it (tuples as lists)
    self.out, self.design = (None if out is None else pathlib.Path(out)), design
    self.arms, self.seconds, self.sources, self.written = {}, {}, {}, set()
    self.donor = None if reuse is None else _donor(pathlib.Path(reuse), design)
    if self.out is None:
      return
    manifest = self.out / MANIFEST
    written = set()
    if manifest.exists():
      old = json.loads(manifest.read_text())
      if _tasks_apart(old["design"]) != _tasks_apart(design) or _sizes_differ(old, design):
        raise InputError(f"--out {str(self.out)!r} holds an eval of another design "
                         f"({_differ(old['design'], design)}): pass a new --out")
      design["sizes"] = {**old["design"]["sizes"], **design["sizes"]}  # tasks may be added
      design["tasks"] = old["design"]["tasks"] + [t for t in design["tasks"]
                                                  if t not in old["design"]["tasks"]]
      written = set(old["written"])
    refuse_foreign(self.out)
    self.written = written
    for name in written:
      if name.startswith("arms/"):
        self._load(json.loads((self.out / name).read_text()))

  def get(self, key: str) -> Measured | None:
    return self.arms.get(key)

  def put(self, key: str, measured: Measured, seconds: float, source: str | None = None):
    arm = {"key": key, "seconds": round(seconds, 1), "reused_from": source,
           "values": {k: np.asarray(v, np.float64).tolist() for k, v in measured.values.items()},
           "produced_ratio": np.asarray(measured.produced_ratio, np.float64).tolist(),
           "feedback_ratio": np.asarray(measured.feedback_ratio, np.float64).tolist(),
           "activity": {k: np.asarray(v, np.float64).tolist()
                        for k, v in measured.activity.items()}}
    self._load(arm)
    if self.out is not None:
      self.write_json(_arm_file(key), arm)

  def reuse(self, key: str) -> bool:
    """Copies the arm `key` from the donor eval where it has it for the same clusters."""
    if self.donor is None:
      return False
    donor, design = self.donor
    task = key.split("/")[0]
    if _arm_file(key) not in design["written"] or \
        design["design"]["sizes"].get(task) != self.design["sizes"].get(task):
      return False
    arm = json.loads((donor / _arm_file(key)).read_text())
    self.put(key, self._measured(arm), arm["seconds"], arm.get("reused_from") or str(donor))
    return True

  def _load(self, arm: dict):
    self.arms[arm["key"]] = self._measured(arm)
    self.seconds[arm["key"]] = arm["seconds"]
    if arm.get("reused_from"):
      self.sources[arm["key"]] = arm["reused_from"]

  @staticmethod
  def _measured(arm: dict) -> Measured:
    return Measured({k: np.asarray(v) for k, v in arm["values"].items()},
                    np.asarray(arm["produced_ratio"]), np.asarray(arm["feedback_ratio"]),
                    {k: np.asarray(v) for k, v in arm.get("activity", {}).items()})

  def write_json(self, name: str, data):
    self._write(name, lambda path: write_json_atomic(path, data))

  def write_text(self, name: str, text: str):
    self._write(name, lambda path: write_text_atomic(
        path, f"{MARKDOWN_FIRST_LINE}\n{text}", first_line=MARKDOWN_FIRST_LINE))

  def write_figure(self, name: str, figure):
    import matplotlib.pyplot as plt

    self._write(name, lambda path: write_png_atomic(path, figure))
    plt.close(figure)

  def _write(self, name, write):
    path = self.out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    self.written.add(name)
    write_json_atomic(self.out / MANIFEST, {"design": self.design,
                                            "written": sorted(self.written)})


def _arm_file(key: str) -> str:
  return f"arms/{key.replace('/', '__')}.json"


def _donor(reuse: pathlib.Path, design: dict) -> tuple[pathlib.Path, dict]:
  """The eval at `reuse` and its manifest, refused unless it ran the same model and size."""
  manifest = reuse / MANIFEST
  if not manifest.is_file():
    raise InputError(f"--reuse {str(reuse)!r} holds no eval (no {MANIFEST}): pass an eval's "
                     "--out directory")
  old = json.loads(manifest.read_text())
  for field in ("model", "quick"):
    if old["design"][field] != design[field]:
      raise InputError(f"--reuse {str(reuse)!r} ran {field} {old['design'][field]!r}, not "
                       f"{design[field]!r}: pass an eval of the same model and size")
  return reuse, old


def refuse_foreign(out):
  """Refuses an `out` that is a file or holds files its manifest does not list."""
  out = pathlib.Path(out)
  if out.exists() and not out.is_dir():
    raise InputError(f"--out {str(out)!r} is a file: pass a directory")
  manifest = out / MANIFEST
  written = set(json.loads(manifest.read_text())["written"]) if manifest.exists() else set()
  foreign = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                   if p.is_file() and p.name != MANIFEST
                   and p.relative_to(out).as_posix() not in written) if out.exists() else []
  if foreign:
    raise InputError(f"--out {str(out)!r} holds files eval did not write "
                     f"({', '.join(foreign[:3])}): pass an empty or new directory")


def _tasks_apart(design: dict) -> dict:
  """The design but for its tasks: an eval may add tasks to its --out."""
  return {k: v for k, v in design.items() if k not in ("tasks", "sizes")}


def _sizes_differ(old: dict, design: dict) -> bool:
  sizes = old["design"]["sizes"]
  return any(sizes.get(task, size) != size for task, size in design["sizes"].items())


def _differ(old: dict, new: dict) -> str:
  return ", ".join(f"{k} {old.get(k)!r} not {new.get(k)!r}" for k in sorted({*old, *new})
                   if old.get(k) != new.get(k))
