"""Tokenizers: GGUF metadata -> `tokenizers.Tokenizer`; HF model dir -> `AutoTokenizer`.

Both come back as one small `Tokenizer` with the same interface (`encode`, `decode`, `bos_id`,
`eos_id`, `vocab_size`, `apply_chat_template`), so the rest of the library never asks where a
model came from.

The GGUF path uses only the `tokenizers` library (plus `gguf` to read the file and `jinja2` for
chat templates): no torch, no transformers at run time. A GGUF holds byte-level BPE
(``tokenizer.ggml.model == "gpt2"``: SmolLM2) or SentencePiece BPE (``"llama"``: Llama 2,
Mistral, Gemma); both are built to give the ids transformers' GGUF loader gives.

Pre-tokenizers of byte-level BPE. A GGUF names its split rule in `tokenizer.ggml.pre`:

- ``"smollm"``: SmolLM2's own ``tokenizer.json`` uses
  ``Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)])``
  (llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_SMOLLM`` is the same: ``\\p{N}`` split first, then the
  GPT-2 regex). transformers' GGUF loader has no entry for ``"smollm"`` and falls back to the
  plain GPT-2 ByteLevel regex. The SmolLM2 vocabulary has only single-digit tokens and no merge
  with a digit, so both give one token per digit; they differ only in what comes *before* a
  number: a run of two or more whitespace characters right before a digit ("\\n\\n1",
  "  12") is one piece here (e.g. ``ĊĊ``, as SmolLM2 was trained) but is cut in two by the
  GPT-2 regex (``Ċ``, ``Ċ``). Ours matches the model's own tokenizer.
- ``"gpt2"`` and ``"default"``: the GPT-2 ByteLevel regex (what transformers also uses; note that
  llama.cpp's own "default" additionally splits punctuation runs).
- ``"qwen2"`` (Qwen2, Qwen3) and ``"llama-bpe"`` (Llama 3): their own split regex, then bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

__all__ = [
  "SUPPORTED_GGUF_MODELS",
  "SUPPORTED_GGUF_PRE",
  "Tokenizer",
  "tokenizer_from_gguf",
  "tokenizer_from_hf_dir",
]

SUPPORTED_GGUF_MODELS = ("gpt2", "llama")
SUPPORTED_GGUF_PRE = ("smollm", "gpt2", "default", "qwen2", "llama-bpe")
# The split rules of Qwen2/Qwen3 and Llama 3 vocabularies (the regexes transformers uses for them).
_SPLITS = {
  "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
  "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

_CONTROL = 3  # llama.cpp token type: control (special) token
_USER_DEFINED = 4  # llama.cpp token type: added, not special
_GEMMA = ("gemma", "gemma2", "gemma3")  # GGUF architectures whose SentencePiece files differ


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
  """Text <-> token ids for one model, plus its chat template.

  Build one with `tokenizer_from_gguf` or `tokenizer_from_hf_dir`. `encode` never adds special
  tokens except BOS, and BOS only where the model asks for it (`add_bos`), or where the caller
  says so. Special tokens written in the text (like ``<|im_start|>``) are matched whole.
  """

  bos_id: int | None
  eos_id: int | None
  vocab_size: int
  add_bos: bool
  chat_template: str | None
  special_tokens: Mapping[str, str | None]  # bos_token, eos_token, unk_token, pad_token
  _encode: Callable[[str], list[int]] = dataclasses.field(repr=False)
  _decode: Callable[[Sequence[int], bool], str] = dataclasses.field(repr=False)
  source: str = ""

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of `text`; BOS first if `add_bos` (default: what the model says)."""
    if not isinstance(text, str):
      raise TypeError(f"encode takes a str, got {type(text).__name__}")
    ids = list(self._encode(text))
    if self.add_bos if add_bos is None else add_bos:
      if self.bos_id is None:
        raise ValueError(f"add_bos=True but this tokenizer ({self.source}) has no BOS token")
      ids.insert(0, self.bos_id)
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """The text of `ids` (a list, tuple or 1-D array of ints)."""
    return self._decode([int(i) for i in ids], skip_special_tokens)

  def apply_chat_template(
    self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
  ) -> str:
    """Render `messages` ([{"role": ..., "content": ...}, ...]) with the model's chat template.

    Rendered in a jinja2 `ImmutableSandboxedEnvironment`, as transformers does (templates come
    from model files, so they are untrusted code). Returns text; `encode` it to get ids.
    """
    if not self.chat_template:
      raise ValueError(f"this tokenizer ({self.source}) has no chat template")
    template = _compile_chat_template(self.chat_template)
    context = {k: v for k, v in self.special_tokens.items() if v is not None}
    context.update(kwargs)
    return template.render(
      messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **context
    )


# ---------------------------------------------------------------------------------------------
# GGUF


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
  """GPT-2's byte -> printable-unicode map (the spelling byte-level vocabularies are stored in)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
  bs += list(range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
  if pre == "smollm":
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  if pre in ("gpt2", "default"):
    return byte_level
  if pre in _SPLITS:
    split = pre_tokenizers.Split(tokenizers.Regex(_SPLITS[pre]), behavior="isolated")
    return pre_tokenizers.Sequence(
      [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
  raise ValueError(
    f"unsupported GGUF tokenizer.ggml.pre {pre!r}; supported: {', '.join(SUPPORTED_GGUF_PRE)}"
  )


def tokenizer_from_gguf(metadata_or_path: Any, source: str = "GGUF metadata") -> Tokenizer:
  """The tokenizer a GGUF file describes (a path, or the file's metadata as a dict, read from
  `source`).

  ``tokenizer.ggml.model`` ``"gpt2"``: byte-level BPE (`_byte_level_bpe`); ``"llama"``:
  SentencePiece BPE (`_sentencepiece_bpe`). Both add control tokens (token_type 3) as special
  tokens and user-defined ones (type 4) as plain added tokens, and read BOS/EOS ids,
  ``add_bos_token`` (absent: False for gpt2, True for llama, as llama.cpp) and
  ``tokenizer.chat_template``. Anything else -> ValueError.
  """
  if isinstance(metadata_or_path, (str, os.PathLike)):
    from attractor_jax.weights.gguf import read_gguf

    source = os.fspath(metadata_or_path)
    meta = read_gguf(source).metadata  # InputError naming the path when it is not a GGUF file
  elif isinstance(metadata_or_path, Mapping):
    meta = metadata_or_path
  else:
    raise TypeError(f"pass a GGUF path or its metadata dict, not {type(metadata_or_path).__name__}")

  kind = meta.get("tokenizer.ggml.model")
  if kind not in SUPPORTED_GGUF_MODELS:
    raise ValueError(
      f"unsupported GGUF tokenizer.ggml.model {kind!r} in {source}; "
      f"supported: {', '.join(SUPPORTED_GGUF_MODELS)}"
    )
  build = _byte_level_bpe if kind == "gpt2" else _sentencepiece_bpe
  backend, tokens, token_types = build(meta, source)
  typed = list(zip(tokens, token_types))
  control = [AddedToken(t, special=True, normalized=False) for t, k in typed if k == _CONTROL]
  user = [AddedToken(t, special=False, normalized=False) for t, k in typed if k == _USER_DEFINED]
  if control:
    backend.add_special_tokens(control)
  if user:
    backend.add_tokens(user)

  def token_of(key: str) -> tuple[int | None, str | None]:
    index = meta.get(f"tokenizer.ggml.{key}")
    if index is None or not 0 <= int(index) < len(tokens):
      return None, None
    return int(index), meta["tokenizer.ggml.tokens"][int(index)]

  bos_id, bos = token_of("bos_token_id")
  eos_id, eos = token_of("eos_token_id")
  _, unk = token_of("unknown_token_id")
  _, pad = token_of("padding_token_id")

  return Tokenizer(
    bos_id=bos_id,
    eos_id=eos_id,
    vocab_size=len(tokens),
    add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")),
    chat_template=meta.get("tokenizer.chat_template"),
    special_tokens={"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad},
    _encode=lambda text: backend.encode(text, add_special_tokens=False).ids,
    _decode=lambda ids, skip: backend.decode(ids, skip_special_tokens=skip),
    source=source,
  )


def _tokens(meta: Mapping[str, Any], source: str) -> tuple[list[str], list[int]]:
  if meta.get("tokenizer.ggml.tokens") is None:
    raise ValueError(f"GGUF {source} has no tokenizer.ggml.tokens")
  tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
  return tokens, list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))


def _byte_level_bpe(meta: Mapping[str, Any], source: str):
  """Byte-level BPE from the file's tokens and merges: a ByteLevel decoder and the
  pre-tokenizer that ``tokenizer.ggml.pre`` names. Returns (backend, tokens, token types)."""
  pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))  # raises early
  tokens, token_types = _tokens(meta, source)
  merges_raw = meta.get("tokenizer.ggml.merges")
  if merges_raw is None:
    raise ValueError(f"GGUF {source} has a byte-level BPE vocabulary but no tokenizer.ggml.merges")

  spelling = _byte_alphabet()
  alphabet = set(spelling.values())

  def spelled(token: str) -> str:  # same respelling as transformers, for files with raw tokens
    return token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))

  vocab: dict[str, int] = {}
  for index, token in enumerate(tokens):
    vocab.setdefault(token if token_types[index] in (_CONTROL, _USER_DEFINED) else spelled(token), index)
  merges = []
  for merge in merges_raw:
    parts = merge.split(" ")
    if len(parts) != 2:
      raise ValueError(f"GGUF {source}: malformed merge {merge!r} (want 'left right')")
    merges.append((parts[0], parts[1]))

  bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
  backend = tokenizers.Tokenizer(bpe)
  backend.pre_tokenizer = pre_tokenizer
  backend.decoder = decoders.ByteLevel()
  return backend, tokens, token_types


def _sentencepiece_bpe(meta: Mapping[str, Any], source: str):
  """SentencePiece BPE as transformers' GGUF loader builds it: the pieces as the vocabulary,
  merges derived from it (`_merges`), byte fallback to the ``<0xXX>`` pieces, spaces as
  ``\u2581`` with a leading one if ``tokenizer.ggml.add_space_prefix`` (absent: True).

  Gemma files differ in two ways: a piece of two or more spaces is stored with real spaces
  (respelled here with ``\u2581``), and their merge order is the pieces' order in the file, not
  their scores. Returns (backend, tokens, token types).
  """
  tokens, token_types = _tokens(meta, source)
  if meta.get("general.architecture") in _GEMMA:
    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
    scores = {t: -float(i) for i, t in enumerate(tokens)}
  elif meta.get("tokenizer.ggml.scores") is not None:
    scores = dict(zip(tokens, meta["tokenizer.ggml.scores"]))
  else:
    raise ValueError(f"GGUF {source} has a SentencePiece vocabulary but no tokenizer.ggml.scores")
  vocab = {t: i for i, t in enumerate(tokens)}
  unk_id = meta.get("tokenizer.ggml.unknown_token_id")
  unk = tokens[int(unk_id)] if unk_id is not None and 0 <= int(unk_id) < len(tokens) else None
  bpe = models.BPE(vocab=vocab, merges=_merges(vocab, scores), unk_token=unk, fuse_unk=True,
                   byte_fallback=True)
  backend = tokenizers.Tokenizer(bpe)
  prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
  backend.pre_tokenizer = pre_tokenizers.Metaspace(
    replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False
  )
  steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
  if prefix:
    steps.append(decoders.Strip(" ", left=1, right=0))
  backend.decoder = decoders.Sequence(steps)
  return backend, tokens, token_types


def _merges(vocab: Mapping[str, int], scores: Mapping[str, float]) -> list[tuple[str, str]]:
  """The BPE merges a SentencePiece vocabulary implies: each split of a piece into two pieces,
  best piece first (higher score; then longer left part; then file order), as transformers'
  `generate_merges` orders them."""
  merges = []
  for piece, score in scores.items():
    for i in range(len(piece) - 1, 0, -1):
      left, right = piece[:i], piece[i:]
      if left in vocab and right in vocab:
        merges.append((score, i, left, right))
  merges.sort(key=lambda m: (m[0], m[1], len(m[3])), reverse=True)
  return [(left, right) for _, _, left, right in merges]


# ---------------------------------------------------------------------------------------------
# HF model directories


def tokenizer_from_hf_dir(path: str | os.PathLike) -> Tokenizer:
  """Wrap `transformers.AutoTokenizer.from_pretrained(path)` in the same interface.

  `add_bos` is whether the HF tokenizer puts BOS first when it adds its special tokens; `encode`
  then never lets HF add anything else (no EOS, no separators).
  """
  from transformers import AutoTokenizer

  hf = AutoTokenizer.from_pretrained(os.fspath(path))
  bos_id = hf.bos_token_id
  with_specials = hf.encode("a", add_special_tokens=True)
  add_bos = bos_id is not None and len(with_specials) > 0 and with_specials[0] == bos_id
  return Tokenizer(
    bos_id=bos_id,
    eos_id=hf.eos_token_id,
    vocab_size=len(hf),
    add_bos=add_bos,
    chat_template=hf.chat_template if isinstance(hf.chat_template, str) else None,
    special_tokens={
      "bos_token": hf.bos_token,
      "eos_token": hf.eos_token,
      "unk_token": hf.unk_token,
      "pad_token": hf.pad_token,
    },
    _encode=lambda text: hf.encode(text, add_special_tokens=False),
    _decode=lambda ids, skip: hf.decode(ids, skip_special_tokens=skip),
    source=os.fspath(path),
  )


# ---------------------------------------------------------------------------------------------
# Chat templates


@lru_cache(maxsize=8)
def _compile_chat_template(source: str) -> Any:
  import jinja2
  from jinja2.ext import loopcontrols
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; transformers overrides it the same way.
    return json.dumps(
      x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
  return env.from_string(source)
