"""attractor-jax: an inference-only attractor memory for transformer LMs, and the suite to judge it."""

from attractor_jax.attractor import (AttractorConfig, AttractorState, Timescale, init_state,
                                     update)
from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.generation import Generation, generate
from attractor_jax.memories.base import Memory, Observation
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.dynamic_eval import DynamicEvalConfig
from attractor_jax.memories.fastweights import FastWeightsConfig
from attractor_jax.memories.hopfield import HopfieldConfig
from attractor_jax.memories.steering import SteeringConfig
from attractor_jax.model import Model, load
from attractor_jax.presets import get_preset, presets
from attractor_jax.checkpoint import restore_state, save_state
from attractor_jax.scoring import perplexity
from attractor_jax.seed_sweep import generate_prompts, generate_seeds, sweep
from attractor_jax.step import make_step, step
from attractor_jax.transformer import Decoder, KVCache, init_cache

__version__ = "0.1.0"
