"""Qwen2.5-Coder 0.5B and 1.5B Instruct (Q4_K_M GGUFs from chunk packages) by name: the joined
file, the tokenizer on every vendored novel, a 16-token forward and 32 greedy tokens, each
against transformers on the same GGUF as `experiments/record_references.py` recorded it."""

import importlib.util

import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax.data import NOVELS, load_text
from attractor_jax.model import gguf_path
from attractor_jax.weights import chunks
from attractor_jax.weights.gguf import read_gguf
from references import check_forward, ids_digest, load_reference

pytestmark = pytest.mark.default_compiler  # parity with transformers, as users compile

FILES = {"qwen2.5-coder-0.5b": chunks.QWEN25_CODER_05B, "qwen2.5-coder-1.5b": chunks.QWEN25_CODER_15B}
# (layers, width, heads, kv heads, head dim, mlp width, vocab) as the files' metadata give them
SHAPES = {"qwen2.5-coder-0.5b": (24, 896, 14, 2, 64, 4864, 151_936),
          "qwen2.5-coder-1.5b": (28, 1536, 12, 2, 128, 8960, 151_936)}


def _installed(name: str) -> bool:
  return all(importlib.util.find_spec(p.replace("-", "_")) for p in FILES[name].packages)


@pytest.fixture(scope="module", params=list(FILES))
def qwen(request):
  """One model at a time (the 1.5B holds 6 GB of float32 weights)."""
  name = request.param
  if not _installed(name):
    first, last = FILES[name].packages[0], FILES[name].packages[-1]
    pytest.skip(f"{first} ... {last} are not installed (make install)")
  return aj.load(name)


def test_load_by_name(qwen):
  cfg = qwen.config
  assert (cfg.family, cfg.num_layers, cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
          cfg.mlp_width, cfg.vocab_size) == ("qwen2",) + SHAPES[qwen.spec]
  assert cfg.attention_bias and gguf_path(qwen.spec).stat().st_size == FILES[qwen.spec].size


def test_tokenizer_matches_transformers_on_the_novels(qwen):
  """Every vendored novel, one call each: length and SHA-256 of the ids as recorded."""
  reference = load_reference(qwen.spec)["tokenizer"]
  for name in NOVELS:
    ids = qwen.tokenizer.encode(load_text(name))
    assert {"tokens": len(ids), "sha256": ids_digest(ids)} == reference["novels"][name], name
  for text, ids in reference["edge_cases"].items():
    assert qwen.tokenizer.encode(text) == ids, text
    assert qwen.tokenizer.decode(ids) == text, text


def test_forward_matches_transformers(qwen):
  """16 tokens, float32, against transformers in float32 and float64 at the recorded ids."""
  check_forward(qwen, load_reference(qwen.spec), atol=1e-4, atol_float64=1e-4)


def test_greedy_matches_transformers_generate(qwen):
  """32 greedy tokens equal transformers' recorded `generate` on the same GGUF."""
  greedy = load_reference(qwen.spec)["greedy"]
  ours = aj.generate(qwen, greedy["prompt"], 32, memory=aj.presets["off"])
  assert ours.prompt_tokens == greedy["prompt_ids"] and ours.tokens == greedy["tokens"]


def test_the_joined_file_is_a_qwen2_gguf(qwen):
  meta = read_gguf(gguf_path(qwen.spec)).metadata
  layers, width, heads, kv_heads = SHAPES[qwen.spec][:4]
  assert (meta["general.architecture"], meta["qwen2.block_count"], meta["qwen2.embedding_length"],
          meta["qwen2.attention.head_count"], meta["qwen2.attention.head_count_kv"],
          meta["tokenizer.ggml.pre"]) == ("qwen2", layers, width, heads, kv_heads, "qwen2")
  assert np.isclose(meta["qwen2.rope.freq_base"], 1e6)
