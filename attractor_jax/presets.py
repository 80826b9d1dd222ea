"""Named memory configurations: the attractor presets of METHOD.md and the related-work memories.

The numbers are first guesses on the default model (host layer 15 of 30, K=8); they are
recorded here, in one place, and the calibration experiment reports how they were checked.
"""

from attractor_jax.attractor import AttractorConfig, Timescale
from attractor_jax.memories.base import Memory
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.dynamic_eval import DynamicEvalConfig
from attractor_jax.memories.fastweights import FastWeightsConfig
from attractor_jax.memories.hopfield import HopfieldConfig
from attractor_jax.memories.steering import SteeringConfig

# Every memory class by its `kind` (how checkpoints name a config).
kinds: dict[str, type[Memory]] = {cls.kind: cls for cls in (
    AttractorConfig, CacheConfig, HopfieldConfig, SteeringConfig, FastWeightsConfig,
    DynamicEvalConfig)}

presets: dict[str, Memory] = {
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
    # Related work (issue 6), run through the same suite.
    "cache": CacheConfig(),
    "hopfield": HopfieldConfig(),
    "steering": SteeringConfig(),
    "fastweights": FastWeightsConfig(),
    "dynamic-eval": DynamicEvalConfig(),
}


def get_preset(name: str) -> Memory:
  """The preset called `name`; InputError listing the names otherwise."""
  from attractor_jax.errors import InputError

  if name not in presets:
    raise InputError(f"unknown preset {name!r}: use one of {', '.join(presets)}")
  return presets[name]
