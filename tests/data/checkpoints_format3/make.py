"""Old-format (attractor-jax/3) checkpoints made by git 472de6b, for the redesign's compatibility tests."""
import json, pathlib, sys
sys.path.insert(0, "tests")
import numpy as np
import attractor_jax as aj
from attractor_jax import checkpoint
from attractor_jax.generation import generate, resume
from tiny_models import random_model

out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
model = random_model(tokenizer=True)
cfg = aj.AttractorConfig(layer=1)
g = generate(model, "hello world", 12, attractor=cfg, seed=3, temperature=0.8, top_p=0.9)
checkpoint.save_state(out / "state_v3", g.state, checkpoint.metadata(cfg, model, g, note="x"))
checkpoint.save_run(out / "run_v3", g, cfg, model)
run = checkpoint.restore_run(out / "run_v3", cfg, model).state
more = resume(model, run, 10, attractor=cfg, temperature=0.8, top_p=0.9)
full = generate(model, "hello world", 22, attractor=cfg, seed=3, temperature=0.8, top_p=0.9)
json.dump({"made_by": "git 472de6b (format attractor-jax/3)", "model": "tests/tiny_jax.random_model(tokenizer=True)",
           "memory": "AttractorConfig(layer=1)", "prompt": "hello world", "seed": 3, "temperature": 0.8, "top_p": 0.9,
           "first_tokens": g.tokens, "resumed_10_tokens": more.tokens, "straight_22_tokens": full.tokens,
           "state_strength": np.asarray(g.state.strength).tolist(), "state_step": int(g.state.step)},
          open(out / "expected.json", "w"), indent=1)
print(g.tokens, more.tokens, full.tokens)
