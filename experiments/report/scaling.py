"""The headline experiment across model sizes (results/headline_scaling.json, written by
`python -m experiments.headline --summarize`): the seed's "~80% drop" tested head-on."""

from __future__ import annotations

from experiments.headline import ARMS

CODER = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")  # coder-instruct models, read on prose


def _cell(test: dict | None, scale: float = 100.0) -> str:
  """"+1.2 [-3.0, +5.4]" in points, bold when Holm p < 0.05; "n/a" when absent."""
  if test is None:
    return "n/a"
  lo, hi = (scale * c for c in test["t_ci95"])
  text = f"{scale * test['mean_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}]"
  return f"**{text}**" if test["p_holm"] < 0.05 else text


def scaling_rows(res: dict) -> list[str]:
  """E3's claim, head-on: per model, the largest relative recall drop among the seed's arms
  and whether it exceeds its sized control's."""
  summary = res.get("headline_scaling")
  rows = []
  for model, m in (summary or {}).get("models", {}).items():
    arms = m["arms"]
    if not arms:
      continue
    worst = min(arms, key=lambda n: arms[n]["relative_accuracy_change"] or 0.0)
    beyond = arms[worst].get("vs_control:carried_accuracy")
    rows.append(
        f"recall after {m['sizes'][1]} closed-loop tokens ({model}, {m['clusters']} prompts, off "
        f"{100 * m['headroom']['off_accuracy']:.0f}%): largest relative drop "
        f"{100 * (arms[worst]['relative_accuracy_change'] or 0.0):+.0f}% ({worst}, feedback "
        f"{100 * arms[worst]['realised_ratio']:.1f}% of the residual); against its sized "
        f"control {_cell(beyond)} points")
  return rows


def scaling_section(res: dict) -> list[str]:
  summary = res.get("headline_scaling")
  if not summary or not summary.get("models"):
    return []
  lines = ["## Long generation, then recall, across model sizes", "",
           "`python -m experiments.headline --model M` then `--summarize`: each prompt states a "
           "fact, the model samples the stated number of tokens with the seed's loop closed, "
           "and the question is read with the carried memory. Recall accuracy in points, arm "
           "minus off and arm minus its average control sized to the arm's realised feedback "
           "(95% t CI; bold: Holm p < 0.05 in its family); MDE at 80% power; the share of "
           "repeated 4-grams (seq-rep-4) in points likewise.", "",
           "| model | off correct | arm | feedback / residual | vs off | MDE | vs sized control "
           "| relative change | seq-rep-4 vs off |", "|---|---|---|---|---|---|---|---|---|"]
  for model, m in summary["models"].items():
    name = f"{model} (coder)" if model in CODER else model
    for arm in ARMS:
      row = m["arms"].get(arm)
      if row is None:
        continue
      off = row.get("vs_off:carried_accuracy")
      lines.append(
          f"| {name} | {100 * m['headroom']['off_accuracy']:.0f}% | {arm} | "
          f"{100 * row['realised_ratio']:.2f}% | {_cell(off)} | "
          f"{100 * off['mde']:.1f} | {_cell(row.get('vs_control:carried_accuracy'))} | "
          f"{100 * (row['relative_accuracy_change'] or 0.0):+.0f}% | "
          f"{_cell(row.get('vs_off:seq_rep_4'))} |")
  lines.append("")
  for model, m in summary["models"].items():
    harm = m["first_detectable_harm"]["carried_accuracy"]
    said = {k: "never" if v is None else f"from {100 * v:.1f}% of the residual"
            for k, v in harm.items()}
    lines.append(f"- {model} ({m['clusters']} prompts x {m['sizes'][1]} tokens, git "
                 f"{(m['git_commit'] or '?')[:7]}): recall harmed detectably by the seed "
                 f"{said['seed']}, by its sized control {said['control:average']}"
                 + ("" if m["headroom"]["in_60_90"] else
                    "; off is outside 60-90% correct, so effects are relative to its off") + ".")
  lines += ["", "![scaling](results/headline_scaling.png)", ""]
  return lines
