"""The minimal benchmark suite: `evaluate(model, memory)` -> Scorecard (`attractor-jax eval`)."""

from attractor_jax.suite.evaluate import evaluate
from attractor_jax.suite.loading import load_memory
from attractor_jax.suite.scorecard import Scorecard, comparison_table
from attractor_jax.suite.tasks import TASKS

__all__ = ["Scorecard", "TASKS", "comparison_table", "evaluate", "load_memory"]
