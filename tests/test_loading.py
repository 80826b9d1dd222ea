"""Loading: the default GGUF model against transformers, its perplexity, clear errors."""

import json
import shutil
import struct
import time

import numpy as np
import pytest
import safetensors.numpy

import attractor_jax as aj
from attractor_jax import config as config_lib
from attractor_jax.data import pride_and_prejudice_from_truth
from attractor_jax.errors import InputError
from attractor_jax.model import default_gguf_path
from attractor_jax.scoring import perplexity
from attractor_jax.weights.convert import transposed
from attractor_jax.weights.gguf import read_gguf, unpermute
from conftest import needs_smollm2, needs_torch
from references import check_forward, load_reference
from tiny_models import random_model

pytestmark = pytest.mark.default_compiler  # parity with transformers, as users compile


@needs_smollm2
def test_default_model_matches_transformers_gguf_loading(smollm2):
  """A 16-token forward against transformers' (float32 and float64) on the same GGUF, as
  `experiments/record_references.py` recorded it (tests/data/references/smollm2-135m.json)."""
  check_forward(smollm2, load_reference("smollm2-135m"), atol=1e-4, atol_float64=1e-4)


@needs_smollm2
def test_default_model_perplexity_on_pride_and_prejudice(smollm2):
  # Measured 21.0128 with both this code and transformers (GGUF loading, float32).
  result = perplexity(smollm2, pride_and_prejudice_from_truth(), window=512, max_tokens=2048)
  assert (result.tokens, result.windows, result.seeds) == (2048, 4, 0)
  assert result.ppl == result.baseline_ppl == pytest.approx(21.09, rel=5e-3)


def _llama_cpp_permute(w, n_head):
  """llama.cpp's convert_hf_to_gguf.py permute of Q/K rows (rotate-half -> interleaved)."""
  rows = w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
  return rows.swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head", [9, 3])  # SmolLM2-135M: 9 query heads, 3 kv heads
def test_unpermute_inverts_llama_cpp_permute(n_head):
  w = np.random.default_rng(n_head).normal(size=(n_head * 8, 5)).astype(np.float32)
  permuted = _llama_cpp_permute(w, n_head)
  assert not np.array_equal(permuted, w)  # the permutation is not a no-op, so undoing it matters
  np.testing.assert_array_equal(unpermute(permuted, n_head), w)
  np.testing.assert_array_equal(_llama_cpp_permute(unpermute(w, n_head), n_head), w)


@pytest.mark.parametrize("shape", [(1, 1), (3, 300), (129, 257), (256, 128)])
def test_tiled_transpose_is_the_transpose(shape):
  a = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  out = transposed(a, tile=128)
  assert out.flags.c_contiguous and out.dtype == a.dtype
  np.testing.assert_array_equal(out, a.T)


# Loading errors: each raises InputError naming the offending value.


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
  """A tiny random llama saved with save_pretrained, written once; copy it before editing."""
  from tiny_models import llama_dir
  path = tmp_path_factory.mktemp("tiny_llama")
  llama_dir(path)
  return path


def test_unknown_spec():
  with pytest.raises(InputError, match="no-such-model"):
    aj.load("no-such-model")


@needs_smollm2
def test_gguf_parser_matches_the_gguf_package():
  """Our GGUF parser reads the same metadata and tensor bytes as `gguf.GGUFReader`."""
  import gguf
  path = default_gguf_path()
  ours, theirs = read_gguf(path), gguf.GGUFReader(path)
  fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}  # header
  assert ours.metadata.keys() == fields.keys()
  for key, field in fields.items():
    assert ours.metadata[key] == field.contents(), key
  assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
  for a, b in zip(ours.tensors, theirs.tensors):
    assert a.qtype == b.tensor_type and a.shape == tuple(int(n) for n in reversed(b.shape))
    np.testing.assert_array_equal(a.data, b.data.view(np.uint8).reshape(a.data.shape))


def _synthetic_gguf(path, alignment=64):
  """A small GGUF file with every kind of value our parser reads, and two tensors."""
  import gguf
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_custom_alignment(alignment)
  w.add_bool("t.flag", True)
  w.add_uint64("t.big", 2 ** 40)
  w.add_float64("t.f64", 0.25)
  w.add_string("t.text", "café")
  w.add_array("t.bools", [True, False, True])
  w.add_array("t.ints", [1, -2, 3])
  w.add_array("t.strings", ["a", "béé", ""])
  w.add_array("t.nested", [[1, 2], [3]])
  w.add_tensor("a.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
  w.add_tensor("b.weight", np.arange(64, dtype=np.float16).reshape(2, 32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_gguf_parser_reads_every_value_kind(tmp_path):
  import gguf
  path = _synthetic_gguf(tmp_path / "syn.gguf")
  ours = read_gguf(path)
  expected = {"general.architecture": "llama", "general.alignment": 64, "t.flag": True,
              "t.big": 2 ** 40, "t.f64": 0.25, "t.text": "café", "t.bools": [True, False, True],
              "t.ints": [1, -2, 3], "t.strings": ["a", "béé", ""], "t.nested": [[1, 2], [3]]}
  assert ours.metadata == expected
  assert [(t.name, t.shape) for t in ours.tensors] == [("a.weight", (3, 4)), ("b.weight", (2, 32))]
  a, b = (gguf.quants.dequantize(t.data, t.qtype) for t in ours.tensors)
  np.testing.assert_array_equal(a, np.arange(12, dtype=np.float32).reshape(3, 4))
  np.testing.assert_array_equal(b, np.arange(64, dtype=np.float32).reshape(2, 32))


def _raw_gguf(path, *fields: bytes):
  """A GGUF v3 header with these raw key/value records and no tensors."""
  path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(fields)) + b"".join(fields))
  return path


def _written(path, data: bytes):
  path.write_bytes(data)
  return path


def _key(name: str) -> bytes:
  return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("name, make, says", [
    ("empty", lambda p: _written(p, b""), "no GGUF magic"),
    ("cut", lambda p: _written(p, _synthetic_gguf(p).read_bytes()[:300]), "truncated"),
    ("align0", lambda p: _raw_gguf(p, _key("general.alignment") + struct.pack("<II", 4, 0)),
     "general.alignment=0"),
    ("kind13", lambda p: _raw_gguf(p, _key("x") + struct.pack("<IIQ", 9, 13, 1)),
     "unknown value type 13"),
])
def test_malformed_gguf_is_refused(tmp_path, name, make, says):
  path = make(tmp_path / f"{name}.gguf")
  with pytest.raises(InputError, match=f"{name}.gguf is not a readable GGUF file.*{says}"):
    aj.load(str(path))


def test_missing_gguf_path(tmp_path):
  path = tmp_path / "missing.gguf"
  with pytest.raises(InputError, match="missing.gguf"):
    aj.load(str(path))


def test_hf_dir_without_config(tmp_path):
  with pytest.raises(InputError, match="config.json") as e:
    aj.load(str(tmp_path))
  assert str(tmp_path) in str(e.value)


def test_hf_dir_without_safetensors(tmp_path):
  import transformers
  transformers.LlamaConfig(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
  with pytest.raises(InputError, match="safetensors") as e:
    aj.load(str(tmp_path))
  assert str(tmp_path) in str(e.value)


@needs_torch
@pytest.mark.parametrize("edit,weight,shapes", [
    ({"intermediate_size": 64}, "['layers'][0]['mlp']['down']['kernel']",
     ("(48, 32)", "(64, 32)")),
    ({"hidden_size": 48, "head_dim": None}, "['embed']['embedding']", ("(97, 32)", "(97, 48)")),
], ids=["intermediate_size", "hidden_size"])
def test_config_disagreeing_with_weights(tiny_llama, tmp_path, edit, weight, shapes):
  path = tmp_path / "edited"
  shutil.copytree(tiny_llama, path)
  cfg = json.loads((path / "config.json").read_text())
  cfg.update(edit)
  cfg = {k: v for k, v in cfg.items() if v is not None}
  (path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(InputError) as e:
    aj.load(str(path))
  message = str(e.value)
  assert weight in message and all(s in message for s in shapes), message


def test_unsupported_model_type(tmp_path):
  import transformers
  bert = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=48, vocab_size=97)
  with pytest.raises(InputError, match="bert"):
    config_lib.from_hf_config(bert)
  bert.save_pretrained(tmp_path)
  dummy = {"dummy": np.zeros(1, np.float32)}
  safetensors.numpy.save_file(dummy, str(tmp_path / "model.safetensors"))
  with pytest.raises(InputError, match="bert"):
    aj.load(str(tmp_path))


def test_llama_with_rope_scaling_is_refused():
  import transformers
  hf = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4,
                                rope_scaling={"rope_type": "linear", "factor": 2.0})
  assert hf.rope_parameters["rope_type"] == "linear"  # transformers 5 spelling
  with pytest.raises(InputError, match="linear"):
    config_lib.from_hf_config(hf)


def test_gguf_architecture_other_than_llama():
  with pytest.raises(InputError, match="qwen2"):
    config_lib.from_gguf_metadata({"general.architecture": "qwen2"}, has_output_tensor=False)


def test_hub_id_offline_fails_fast(monkeypatch):
  import huggingface_hub.constants
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  # huggingface_hub reads HF_HUB_OFFLINE once, at import (already done by transformers).
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):  # restored after the test
    monkeypatch.setenv(name, "10")
  start = time.monotonic()
  with pytest.raises(InputError, match="someorg/somemodel"):
    aj.load("someorg/somemodel")
  assert time.monotonic() - start < 30


@pytest.mark.parametrize("bad", [97, -1])
def test_token_ids_outside_the_vocabulary(bad):
  model = random_model(vocab_size=97, num_layers=1, max_len=16)
  assert model.logits([[1, 96, 2]]).shape == (1, 3, 97)  # the last id is in range
  with pytest.raises(InputError, match=f"token id {bad} .*97"):
    model.logits([[1, bad, 2]])


@needs_smollm2
def test_greedy_off_matches_transformers_generate(smollm2):
  """32 greedy tokens of preset off equal transformers' recorded `generate` on the same GGUF
  (it stops at EOS as we do; this prompt runs 32 tokens without one)."""
  greedy = load_reference("smollm2-135m")["greedy"]
  ours = aj.generate(smollm2, greedy["prompt"], 32, memory=aj.presets["off"])
  assert ours.prompt_tokens == greedy["prompt_ids"] and ours.tokens == greedy["tokens"]
