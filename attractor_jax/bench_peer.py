"""The bench's peer: transformers (PyTorch, float32) on the same model files, timed as we are.

    python -m attractor_jax.bench_peer --model smollm2-135m --ids 1,2,3 --rows 1,16,64
      ->  one JSON object on stdout: the medians of `sample_s` (by row count) and
          `decode_ms_per_token` (the bench runs it as its separate-process peer)

Batched sampling repeats the prompt once per row, passes the attention mask, samples with the
same temperature and top-p (top-k off), and generates exactly `tokens` tokens per row (EOS
cannot stop it: `min_new_tokens`). Times include the prompt's pass, as ours do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def load_hf(spec: str):
  """The same model in transformers (float32), or None when torch is missing."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  from attractor_jax.model import gguf_path

  path = gguf_path(spec)
  if path is not None:
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  return transformers.AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32).eval()


def generate_seconds(hf, ids: list[int], rows: int, tokens: int, temperature: float = 0.0,
                     top_p: float = 1.0) -> float:
  """Wall seconds of one `generate` call: `rows` copies of the prompt, `tokens` new tokens
  each (greedy at temperature 0, else temperature + top-p sampling)."""
  import torch

  prompts = torch.tensor([ids] * rows)
  sampling = (dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
              if temperature > 0 else dict(do_sample=False))
  with torch.no_grad():
    t = time.perf_counter()
    out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=tokens,
                      min_new_tokens=tokens, pad_token_id=0, **sampling)
    seconds = time.perf_counter() - t
  assert out.shape == (rows, len(ids) + tokens), out.shape
  return seconds


def decode_ms_per_token(hf, ids: list[int], tokens: int) -> float:
  """Greedy decode ms per token after the prompt's pass: (t(tokens) - t(1)) / (tokens - 1),
  as ours excludes its prompt pass."""
  whole = generate_seconds(hf, ids, 1, tokens)
  first = generate_seconds(hf, ids, 1, 1)
  return 1e3 * (whole - first) / (tokens - 1)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m")
  parser.add_argument("--ids", required=True, help="the prompt's token ids, comma-separated")
  parser.add_argument("--rows", default="1,16,64")
  parser.add_argument("--tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--temperature", type=float, default=0.8)
  parser.add_argument("--top-p", type=float, default=0.95)
  args = parser.parse_args(argv)
  hf = load_hf(args.model)
  ids = [int(i) for i in args.ids.split(",")]
  rows = [int(r) for r in args.rows.split(",")]
  generate_seconds(hf, ids, 1, 4, args.temperature, args.top_p)  # warm-up
  seconds = {r: [] for r in rows}
  for _ in range(args.repeats):
    for r in rows:
      seconds[r].append(generate_seconds(hf, ids, r, args.tokens, args.temperature, args.top_p))
  print(json.dumps({"sample_s": {str(r): statistics.median(s) for r, s in seconds.items()},
                    "decode_ms_per_token": decode_ms_per_token(hf, ids, args.tokens)}))


if __name__ == "__main__":
  main()
