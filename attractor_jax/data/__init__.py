"""Vendored public-domain text: the six novels of Jane Austen (provenance in README.md).

  from attractor_jax.data import NOVELS, load_text, pride_and_prejudice_from_truth
  text = load_text("emma")
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

__all__ = ["NOVELS", "load_text", "pride_and_prejudice_from_truth"]

NOVELS: tuple[str, ...] = (
  "emma",
  "mansfieldpark",
  "northangerabbey",
  "persuasion",
  "prideprejudice",
  "sensesensibility",
)

_TRUTH = "It is a truth universally acknowledged"


@lru_cache(maxsize=len(NOVELS))
def load_text(name: str) -> str:
  """The full text of one novel (a name from `NOVELS`), as a str."""
  if name not in NOVELS:
    raise ValueError(f"unknown novel {name!r}; choose one of: {', '.join(NOVELS)}")
  data = resources.files(__name__).joinpath(f"{name}.txt.gz").read_bytes()
  return gzip.decompress(data).decode("utf-8")


def pride_and_prejudice_from_truth() -> str:
  """Pride and Prejudice from "It is a truth universally acknowledged" to the end.

  The perplexity reference text: the novel without its title lines.
  """
  text = load_text("prideprejudice")
  return text[text.index(_TRUTH) :]
