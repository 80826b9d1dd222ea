"""Named memory configurations: the attractor presets of docs/method.md and the related-work
memories. Preset `off` is no memory at all: None.

The attractor presets keep docs/method.md's numbers (host layer: the model's middle one, 15 of
SmolLM2's 30; K=8, alpha 0.1): they are the seed's configurations under test. `tuned` is preset seed with the alpha that
calibration chose. The related-work memories' strengths were calibrated on *Emma* (lowest
token-by-token perplexity on its first 512 tokens; the cache on its first 4,096; README says
which command) and are evaluated on the other novels.
"""

from attractor_jax.attractor import AttractorConfig, Timescale
from attractor_jax.memories.base import Memory
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.dynamic_eval import DynamicEvalConfig
from attractor_jax.memories.fastweights import FastWeightsConfig
from attractor_jax.memories.hopfield import HopfieldConfig
from attractor_jax.memories.steering import SteeringConfig

presets: dict[str, Memory | None] = {
    # No memory at all: exactly the baseline model.
    "off": None,
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
    # Preset seed at the alpha calibration chose (0.3 of 0.03, 0.1, 0.3, 1).
    "tuned": AttractorConfig(alpha=0.3),
    # Related work, run through the same suite; strengths from calibration.
    "cache": CacheConfig(theta=40.0, lam=0.05, window=2048),
    "hopfield": HopfieldConfig(alpha=0.3),
    "steering": SteeringConfig(alpha=0.3),
    "fastweights": FastWeightsConfig(alpha=0.3),
    "dynamic-eval": DynamicEvalConfig(lr=0.001),  # the grid's best, still worse than off
}


def get_preset(name: str) -> Memory | None:
  """The preset called `name`; InputError listing the names otherwise."""
  from attractor_jax.errors import InputError

  if name not in presets:
    raise InputError(f"unknown preset {name!r}: use one of {', '.join(presets)}")
  return presets[name]
