"""What we conclude: plain sentences, each derived from the numbers in results/*.json."""

from __future__ import annotations

from experiments.report.experiments import e4_files, finite_words
from experiments.report.format import ci_text, direction
from experiments.report.memories import (MEMORIES, memory_answer, memory_table,
                                           ppl_against_cache)
from experiments.report.study import SEED_GAIN


def _mde_words(test: dict) -> str:
  """' (MDE x points, within/beyond the seed's +3.3)' for an accuracy test with an MDE."""
  if test.get("mde") is None:
    return ""
  mde = 100 * test["mde"]
  return (f" (MDE {mde:.1f} points, "
          f"{'small enough' if mde <= SEED_GAIN else 'too large'} to see the seed's +{SEED_GAIN})")


def conclude(res: dict) -> list[str]:
  """Plain sentences, each derived from the numbers above (nothing here is typed by hand)."""
  out = []
  e1 = {k.removeprefix("e1_ppl_"): v for k, v in res.items()
        if k.startswith("e1_ppl_") and k.removeprefix("e1_ppl_") not in MEMORIES}
  if e1:
    widest = max(max(abs(c) for c in r["delta_pct_ci95"]) for r in e1.values())
    out.append(f"Perplexity: every attractor preset's 95% CI lies within +-{widest:.2f}% of the "
               "baseline" + (". The layer neither helps nor hurts perplexity by more than 1% "
                             "here, which matches the seed's ~0%." if widest < 1 else "."))
  e3 = res.get("e3_generation")
  if e3:
    found = {p: direction(v["seq_rep_4"]["ci95"], "more", "less")
             for p, v in e3["paired_vs_off"].items()}
    rep = {p: v["seq_rep_4"] for p, v in e3["paired_vs_off"].items()}
    parts = [f"{p} {d} ({rep[p]['mean_diff']:+.3f}, p = {rep[p]['p_value']:.3f})"
             for p, d in found.items()]
    detected = {d for d in found.values() if d != "no detectable change"}
    n_prompts = len(e3["data"])
    out.append(f"Long generations ({e3['max_new_tokens']} tokens), 4-gram repetition vs off: "
               + "; ".join(parts) + "." + (" Every detectable change is more repetition, the "
                                          "failure the seed reported." if detected == {"more"}
                                          else "")
               + (f" With {n_prompts} prompts as clusters no sign-flip p-value can fall below "
                  f"{2 / 2 ** n_prompts:.3f}: a CI that excludes 0 here is weak evidence."
                  if 2 / 2 ** n_prompts > 0.01 else
                  f" ({n_prompts} prompts as clusters; MDE of seq-rep-4: " + ", ".join(
                      f"{p} {v['seq_rep_4']['mde']:.3f}" for p, v in e3["paired_vs_off"].items()
                      if v["seq_rep_4"].get("mde") is not None) + ".)"))
  for model, e4 in e4_files(res).items():
    off = e4["summary"]["off"]["accuracy"]["mean"]
    out.append(f"Comprehension ({model}): off answers {100 * off:.0f}% correctly against a "
               f"chance level of {100 * e4['chance']:.0f}%. "
               + ("With the model at chance, the seed's +3.3% cannot be tested with it; "
                  if off < e4["chance"] + 0.05 else "")
               + "; ".join(f"{p}: {direction(v['accuracy']['ci95'], 'higher', 'lower')}"
                           + _mde_words(v["accuracy"]) for p, v in e4["paired_vs_off"].items())
               + ".")
  cloze = res.get("suite_recall", {}).get("cloze")
  if cloze:
    out.append(f"Last-word cloze: off {100 * cloze['summary']['off']['accuracy']['mean']:.0f}% "
               f"({cloze['n_items']} items); accuracy vs off: " + "; ".join(
                   f"{p} {direction(v['accuracy']['ci95'], 'higher', 'lower')}, gold "
                   f"log-prob {direction(v['gold_logprob']['ci95'], 'higher', 'lower')}"
                   for p, v in cloze["paired_vs_off"].items()) + ".")
  e5 = res.get("e5_sweeps")
  for axis, words in (("K", "More attractors"), ("lambda", "Faster decay")):
    part = [r for r in (e5 or {}).get("rows", []) if r["axis"] == axis]
    if part:
      low, high = part[0], part[-1]
      test = high["vs_off"]
      found = (direction(test["t_ci95"], "higher", "lower") if test["p_holm"] < 0.05
               else "no detectable change after Holm")
      ratio = lambda row: row["activity"]["feedback_ratio_mean"]
      out.append(f"{words} ({axis} {low['value']} to {high['value']}, {e5['clusters']} windows): "
                 f"NLL change vs off {low['vs_off']['mean_diff']:+.4f} to "
                 f"{test['mean_diff']:+.4f} nats/token (at {axis}={high['value']} {found}, Holm "
                 f"p {test['p_holm']:.2g}); realised |feedback| / residual {ratio(low):.4f} to "
                 f"{ratio(high):.4f}; {finite_words(part)}.")
  e6 = res.get("e6_topics")
  if e6:
    out.append("Topic switch: snap-back vs off, " + "; ".join(
        f"{p} {direction(v['ci95'], 'more', 'less')}" for p, v in e6["paired_vs_off"].items())
        + ".")
  traj = res.get("trajectories")
  if traj:
    out.append(f"Strength over {traj['max_new_tokens']} generated tokens (seed 0): " + "; ".join(
        f"{p} ends with {f['attractors_above_0.5_end']} attractor(s) above 0.5 and mean strength "
        f"{f['mean_strength_end']:.2f}" for p, f in traj["strength_seed0_end"].items()) + ".")
  cal = res.get("calibration")
  if cal:
    best = cal["strength"]["best"]
    pieces = [f"{n} {best[n]['delta_pct']:+.2f}%" for n in ("seed", "steering", "hopfield",
                                                             "fastweights") if n in best]
    close = ("seed" in best and "steering" in best
             and abs(best["seed"]["delta_pct"] - best["steering"]["delta_pct"]) < 0.25)
    out.append(f"Calibration ({cal['novel']}, token by token): at their best strength, "
               + ", ".join(pieces) + " perplexity change." + (
                   " A fixed steering vector comes within 0.25 points of the learning attractor "
                   "layer, which suggests that most of what the layer does to perplexity is a "
                   "constant push along the mean attention direction." if close else "")
               + (" On E1's novel, at the same settings: " + ", ".join(
                   f"{n} {res[f'e1_ppl_{n}']['delta_pct']:+.2f}% {ci_text(res[f'e1_ppl_{n}']['delta_pct_ci95'])}"
                   for n in ("tuned", "steering", "hopfield", "fastweights") if f"e1_ppl_{n}" in res)
                  + " (tuned is seed at its calibrated alpha)" + (
                      ": none differs detectably from off on that novel." if all(
                          res[f"e1_ppl_{n}"]["delta_pct_ci95"][0] <= 0 <= res[f"e1_ppl_{n}"]["delta_pct_ci95"][1]
                          for n in ("tuned", "steering", "hopfield", "fastweights")
                          if f"e1_ppl_{n}" in res) else ".")
                  if "e1_ppl_steering" in res else ""))
  table = memory_table(res)
  cache = res.get("e1_ppl_cache")
  if cache:
    out.append(f"The continuous cache changes perplexity by {cache['delta_pct']:+.2f}% "
               f"{ci_text(cache['delta_pct_ci95'])} over {cache['windows']} windows of E1's novel ("
               + direction(cache["delta_pct_ci95"], "worse than off", "better than off") + ").")
    against = ppl_against_cache(res)
    worse = [n for n, c in against.items() if c["t_ci95"][0] > 0]
    if against:
      out.append("Paired with the cache on the same windows, the attractor layer's NLL is "
                 + ("higher (strictly worse) for " + ", ".join(worse) if worse else
                    "not detectably higher for any row") + " (" + "; ".join(
                     f"{n} {c['mean_diff']:+.4f} nats/token {ci_text(c['t_ci95'], '{:+.4f}')}"
                     for n, c in against.items()) + ").")
  if any(r["memory"] in MEMORIES and any(r[m] for m in r if m != "memory") for r in table):
    out.append("Against the attractor layer on E7's table (same text and items): "
               + "; ".join(memory_answer(table)) + ".")
  return out
