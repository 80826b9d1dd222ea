"""attractor-jax: an inference-only attractor memory for transformer LMs, and the suite to judge it."""

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.model import Model, load
from attractor_jax.transformer import Decoder, KVCache, init_cache

__version__ = "0.1.0"
