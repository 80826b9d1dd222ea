"""Parity with transformers (PyTorch, float32) on random tiny llama and gpt2 models."""

import numpy as np
import pytest

from conftest import needs_torch

pytestmark = [needs_torch, pytest.mark.default_compiler]  # as users compile


def _hf_logits(model, tokens):
  import torch
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


def _tokens(seed=0, batch=3, seq=20):
  return np.random.default_rng(seed).integers(0, 97, size=(batch, seq))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("tie", [True, False])
def test_llama_matches_transformers(tmp_path, kv_heads, tie):
  from tiny_models import llama_dir
  import attractor_jax as aj
  hf = llama_dir(tmp_path, kv_heads=kv_heads, tie=tie, rope_theta=12_345.0)
  model = aj.load(str(tmp_path))
  tokens = _tokens()
  np.testing.assert_allclose(np.asarray(model.logits(tokens)), _hf_logits(hf, tokens), atol=1e-4)


def test_llama_with_attention_bias_matches_transformers(tmp_path):
  from tiny_models import llama_dir
  import attractor_jax as aj
  hf = llama_dir(tmp_path, bias=True)
  tokens = _tokens(1)
  np.testing.assert_allclose(np.asarray(aj.load(str(tmp_path)).logits(tokens)),
                             _hf_logits(hf, tokens), atol=1e-4)


def test_gpt2_matches_transformers(tmp_path):
  from tiny_models import gpt2_dir
  import attractor_jax as aj
  hf = gpt2_dir(tmp_path)
  tokens = _tokens(2)
  np.testing.assert_allclose(np.asarray(aj.load(str(tmp_path)).logits(tokens)),
                             _hf_logits(hf, tokens), atol=1e-4)
