"""transformers' recorded answers on a model's GGUF (`experiments/record_references.py`)."""

import json

import numpy as np

from experiments.record_references import ids_digest, reference_path, weight_digest


def load_reference(spec: str) -> dict:
  return json.loads(reference_path(spec).read_text())


def check_weights(get_weight, reference: dict):
  """Every HF-named tensor `get_weight(name)` has transformers' bits (SHA-256 of float32)."""
  for name, digest in reference["weights_sha256"].items():
    assert weight_digest(get_weight(name)) == digest, name


def check_forward(model, reference: dict, atol: float, atol_float64: float):
  """Our 16-token forward against transformers' (float32 and float64) at the recorded vocab
  ids, and the argmax over the whole vocabulary at every position."""
  forward = reference["forward"]
  ours = np.asarray(model.logits([forward["ids"]]))[0]
  assert ours.argmax(-1).tolist() == forward["argmax"]
  at = ours[:, forward["vocab_ids"]]
  assert np.abs(at - np.asarray(forward["logits_float32"])).max() <= atol
  assert np.abs(at - np.asarray(forward["logits_float64"])).max() <= atol_float64
