"""A new memory from scratch, written only against the Memory interface: a leaky average of
the host layer's attention output, fed back. generate, a vmapped seed sweep, perplexity and an
orbax checkpoint take it unchanged. `.venv/bin/python examples/custom_memory.py` (default model)."""

import dataclasses
import tempfile

import flax.struct
import jax
import jax.numpy as jnp

import attractor_jax as aj
from attractor_jax.data import load_text
from attractor_jax.memories.base import pool


@flax.struct.dataclass
class AverageState:
  mean: jax.Array  # [D]: leaky average of the host layer's pooled attention output


@dataclasses.dataclass(frozen=True, kw_only=True)
class AverageConfig(aj.Memory):
  """x_avg <- (1 - rate) x_avg + rate x; the next pass receives alpha * x_avg."""

  kind = "leaky-average"  # defining the class registers it for checkpoints
  starts_silent = True  # a fresh state's feedback is zero: seeds share the prompt's pass
  rate: float = 0.1
  alpha: float = 0.1

  def fresh_state(self, model_config, key, prompt_attn_TxD=None):
    return AverageState(mean=jnp.zeros((model_config.width,), jnp.float32))

  def observe(self, state, obs, params):
    new = AverageState(mean=(1 - self.rate) * state.mean + self.rate * pool(obs.attn_out, "last"))
    return new, aj.Info(feedback_norm=jnp.linalg.norm(self.feedback(new)))

  def feedback(self, state):
    return self.alpha * state.mean


def run(model, prompt, text: str, checkpoint_dir: str, window: int = 128) -> dict:
  """Generation, a 4-seed sweep, perplexity and a checkpoint round trip with the new memory."""
  memory = AverageConfig(layer=model.config.num_layers // 2)
  one = aj.generate(model, prompt, 24, memory=memory)
  seeds = aj.generate_seeds(model, prompt, 24, memory=memory, seeds=4, temperature=0.8, top_p=0.95)
  ppl = aj.perplexity(model, text, window=window, max_tokens=2 * window, memory=memory, seeds=2)
  aj.save_state(checkpoint_dir, one.state, memory=memory, model=model, note="leaky average")
  return {"generation": one, "seeds": seeds, "perplexity": ppl,
          "restored": aj.restore_state(checkpoint_dir, memory=memory, model=model)}


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as tmp:
    out = run(aj.load(), "It is a truth universally acknowledged,", load_text("emma"),
              f"{tmp}/average")
  print(out["generation"].text, out["perplexity"].to_json()["delta_pct"], out["restored"].user)
