"""Records what transformers computes on a model's GGUF, for tests that then load only ours.

    python -m experiments.record_references [--model smollm2-135m|gemma3-270m]
      ->  tests/data/references/<model>.json

transformers loads the same GGUF (its own dequantization, float32); the file holds the
SHA-256 of every weight under its HF name, the logits of a 16-token forward (at every
position: the argmax, and the logits of a fixed sample of 256 vocabulary ids plus each
position's top 8, in float32 and float64), 32 greedy tokens of `generate`, and its tokenizer's
encoding of each vendored novel (length and SHA-256 of the ids) and of edge-case strings. Rerun it when
a loader, transformers or a model's files change; the tests say which file they read.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib

import numpy as np

from attractor_jax.bench_peer import load_hf
from attractor_jax.data import NOVELS, load_text
from attractor_jax.model import gguf_path
from attractor_jax.tokenizer import tokenizer_from_gguf
from attractor_jax.weights.gguf import read_gguf
from attractor_jax.writing import write_json_atomic

FORWARD_TEXT = ("persuasion", 400)  # the novel and characters whose first 16 tokens are read
GREEDY_PROMPT = "Once upon a time, in a small village by the sea, there lived"
GREEDY_TOKENS = 32
SAMPLED_IDS = 256
EDGE_CASES = ("", " ", "  a   b    c", "\t\tx\n\n\ny\n", "naïve café — “quoted”", "\x07 \u9fff 🦜",
              " leading", "trailing  ", "def f(x):\n    return x ** 2  # square\n")


def reference_path(spec: str) -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "references" / (
      f"{spec}.json")


def weight_digest(array: np.ndarray) -> str:
  """SHA-256 of a float32 array's bytes (C order)."""
  return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


def ids_digest(ids: list[int]) -> str:
  """SHA-256 of token ids as little-endian int32."""
  return hashlib.sha256(np.asarray(ids, "<i4").tobytes()).hexdigest()


def tokenizer_reference(path: pathlib.Path) -> dict:
  """transformers' tokenizer for the GGUF on every novel (length, digest) and the edge cases."""
  import transformers

  hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
  novels = {}
  for name in NOVELS:
    ids = hf.encode(load_text(name))
    novels[name] = {"tokens": len(ids), "sha256": ids_digest(ids)}
  return {"novels": novels, "edge_cases": {text: hf.encode(text) for text in EDGE_CASES}}


def forward_ids(tokenizer) -> list[int]:
  name, chars = FORWARD_TEXT
  return tokenizer.encode(load_text(name)[:chars])[:16]


def vocab_sample(vocab_size: int, logits_TxV: np.ndarray) -> np.ndarray:
  """Fixed random ids, plus every position's top 8 (sorted, unique)."""
  fixed = np.random.default_rng(0).choice(vocab_size, SAMPLED_IDS, replace=False)
  top = np.argsort(-logits_TxV, axis=-1)[:, :8].ravel()
  return np.unique(np.concatenate([fixed, top]))


def record(spec: str) -> dict:
  import torch
  import transformers

  path = gguf_path(spec)
  file = read_gguf(path)
  tokenizer = tokenizer_from_gguf(file.metadata, source=path)
  hf = load_hf(spec)
  state = hf.state_dict()
  tied = hf.config.tie_word_embeddings
  digests = {name: weight_digest(t.numpy()) for name, t in state.items()
             if not (tied and name == "lm_head.weight")}
  ids = forward_ids(tokenizer)
  with torch.no_grad():
    logits32 = hf(torch.tensor([ids])).logits[0].numpy()
    logits64 = torch.nn.Module.double(hf)(torch.tensor([ids])).logits[0].numpy()
    torch.nn.Module.float(hf)  # back to its float32 weights, exactly
    prompt = tokenizer.encode(GREEDY_PROMPT)
    eos = int(tokenizer.eos_id)
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                      eos_token_id=eos, pad_token_id=eos)
  sample = vocab_sample(logits32.shape[-1], logits32)
  return {
      "model": spec, "gguf": path.name, "gguf_bytes": path.stat().st_size,
      "transformers": transformers.__version__, "torch": torch.__version__,
      "weights_sha256": digests,
      "forward": {"ids": ids, "argmax": logits32.argmax(-1).tolist(),
                  "vocab_ids": sample.tolist(),
                  "logits_float32": logits32[:, sample].tolist(),
                  "logits_float64": logits64[:, sample].tolist()},
      "greedy": {"prompt": GREEDY_PROMPT, "prompt_ids": prompt,
                 "tokens": out[0, len(prompt):].tolist()},
      "tokenizer": tokenizer_reference(path),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  args = parser.parse_args(argv)
  out = reference_path(args.model)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_json_atomic(out, record(args.model))
  print(out)


if __name__ == "__main__":
  main()
