"""Named attractor configurations (METHOD.md "Presets"); defaults live in AttractorConfig.

The numbers are first guesses on the default model (host layer 15 of 30, K=8); they are
recorded here, in one place, and the calibration experiment reports how they were checked.
"""

from attractor_jax.attractor import AttractorConfig, Timescale

presets: dict[str, AttractorConfig] = {
    # No attractor layer at all: exactly the baseline model.
    "off": AttractorConfig(enabled=False),
    # The seed's original configuration: no gate, no burn-in.
    "seed": AttractorConfig(),
    # The seed's revised configuration: similarity gate plus a burn-in threshold.
    "gated": AttractorConfig(gate="similarity", burn_in_steps=16, burn_in_strength=0.1),
    # The author's follow-up: fast / medium / slow banks whose feedbacks add.
    "multiscale": AttractorConfig(timescales=(
        Timescale(eta=0.5, gamma=0.5, lam=0.2),
        Timescale(eta=0.1, gamma=0.1, lam=0.02),
        Timescale(eta=0.02, gamma=0.02, lam=0.002),
    )),
}


def get_preset(name: str) -> AttractorConfig:
  """The preset called `name`; InputError listing the names otherwise."""
  from attractor_jax.errors import InputError

  if name not in presets:
    raise InputError(f"unknown preset {name!r}: use one of {', '.join(presets)}")
  return presets[name]
