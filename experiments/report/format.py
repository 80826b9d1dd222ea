"""Formatting shared by the report's sections: CIs, verdicts, table cells."""

from __future__ import annotations


def ci_text(ci, fmt="{:+.2f}") -> str:
  return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def verdict(ci, p: float) -> str:
  """Direction when the bootstrap CI excludes 0; the permutation p is always shown (with few
  clusters its smallest possible value can exceed 0.05, e.g. 2/16 with 4 prompts)."""
  if ci[0] <= 0 <= ci[1]:
    return f"no detectable change: CI spans 0, p = {p:.3f}"
  return f"{'higher' if ci[0] > 0 else 'lower'} than off: CI excludes 0, p = {p:.3f}"


def direction(ci, more: str, less: str) -> str:
  return "no detectable change" if ci[0] <= 0 <= ci[1] else (more if ci[0] > 0 else less)


def table_cell(paired: dict | None, scale: float = 1.0, fmt: str = "{:+.3f}",
               p_holm: float = 0.0) -> str:
  """"diff [CI]" of a paired comparison, bold when the CI excludes 0 and the Holm-adjusted
  p-value (the caller's, over its table) is below 0.05; "n/a" when absent."""
  if paired is None:
    return "n/a"
  lo, hi = (scale * c for c in paired["ci95"])
  text = f"{fmt.format(scale * paired['mean_diff'])} [{fmt.format(lo)}, {fmt.format(hi)}]"
  return f"**{text}**" if (lo > 0 or hi < 0) and p_holm < 0.05 else text
