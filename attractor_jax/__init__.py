"""attractor-jax: an inference-only attractor memory for transformer LMs, and the suite to judge it.

    import attractor_jax as aj
    model = aj.load()                                   # SmolLM2-135M; or a .gguf, HF dir, hub id
    out = aj.generate(model, "prompt", 200, memory=aj.presets["gated"], seed=0)
    runs = aj.generate_seeds(model, "prompt", 100, memory=aj.presets["seed"], seeds=16)
    ppl = aj.perplexity(model, text, window=512, memory=aj.presets["seed"], seeds=8)
    aj.save_state("ckpt", out.state, memory=out.memory, model=model, note="...")
"""

from attractor_jax.attractor import AttractorConfig, AttractorState, Timescale
from attractor_jax.checkpoint import Restored, restore_state, save_state
from attractor_jax.config import ModelConfig
from attractor_jax.engine import Engine, Pass, Step
from attractor_jax.forcing import Forced
from attractor_jax.errors import InputError
from attractor_jax.generation import Generation, generate
from attractor_jax.memories.base import Info, Memory, Observation
from attractor_jax.memories.cache import CacheConfig
from attractor_jax.memories.controls import ControlConfig
from attractor_jax.memories.dynamic_eval import DynamicEvalConfig
from attractor_jax.memories.fastweights import FastWeightsConfig
from attractor_jax.memories.hopfield import HopfieldConfig
from attractor_jax.memories.steering import SteeringConfig
from attractor_jax.model import Model, load
from attractor_jax.presets import get_preset, presets
from attractor_jax.sampling import SamplingState, Trace
from attractor_jax.scoring import Perplexity, perplexity
from attractor_jax.seed_sweep import SeedRuns, Sweep, generate_prompts, generate_seeds, sweep

__version__ = "0.2.0"

__all__ = [
    # Models: load one, read a pass, run it with a memory.
    "load", "Model", "ModelConfig", "Engine", "Step", "Pass", "Forced",
    # Memories: the interface, the attractor layer, the related-work memories, presets.
    "Memory", "Observation", "Info", "presets", "get_preset",
    "AttractorConfig", "AttractorState", "Timescale",
    "CacheConfig", "HopfieldConfig", "SteeringConfig", "FastWeightsConfig", "DynamicEvalConfig",
    "ControlConfig",
    # Running: generation, seed sweeps, perplexity, and what they return.
    "generate", "Generation", "generate_seeds", "generate_prompts", "SeedRuns", "sweep", "Sweep",
    "perplexity", "Perplexity", "SamplingState", "Trace",
    # Saving memory state.
    "save_state", "restore_state", "Restored",
    "InputError",
]
