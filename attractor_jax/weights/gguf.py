"""Loads a llama-architecture GGUF file: dequantized weights, with llama.cpp's Q/K permutation undone."""

from __future__ import annotations

import pathlib
import re

import gguf
import numpy as np

from attractor_jax import config as config_lib
from attractor_jax.errors import InputError
from attractor_jax.weights.convert import to_params

_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def read_gguf(path: str | pathlib.Path) -> gguf.GGUFReader:
  path = pathlib.Path(path)
  if not path.is_file():
    raise InputError(f"GGUF file {str(path)!r} does not exist: pass the path of a .gguf file")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the gguf package raises bare ValueError/struct errors on bad files
    raise InputError(f"{path} is not a readable GGUF file ({e}): pass a valid .gguf file") from None


def metadata(reader: gguf.GGUFReader) -> dict:
  """GGUF key/values as Python values (token lists included)."""
  out = {}
  for name, field in reader.fields.items():
    try:
      out[name] = field.contents()
    except Exception:  # some exotic field types have no decoder; the model needs none of them
      continue
  return out


def hf_name(gguf_name: str) -> str:
  """Maps a GGUF tensor name to its HF llama name (e.g. blk.3.attn_q.weight -> model.layers.3...)."""
  m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if m:
    return f"model.layers.{m[1]}.{_BLOCK_NAMES.get(m[2], m[2])}.{m[3]}"
  base, _, kind = gguf_name.rpartition(".")
  return f"{_GLOBAL_NAMES.get(base, base)}.{kind}"


def unpermute(w_OxI: np.ndarray, n_head: int) -> np.ndarray:
  """Undoes llama.cpp's interleaving of Q/K rows, back to HF's rotate-half layout."""
  half = w_OxI.shape[0] // n_head // 2
  return w_OxI.reshape(n_head, half, 2, *w_OxI.shape[1:]).swapaxes(1, 2).reshape(w_OxI.shape)


def load_gguf(path: str | pathlib.Path):
  """Returns (ModelConfig, params, reader) for a llama GGUF file."""
  reader = read_gguf(path)
  meta = metadata(reader)
  names = {t.name for t in reader.tensors}
  cfg = config_lib.from_gguf_metadata(meta, has_output_tensor="output.weight" in names,
                                      name=str(path))
  tensors = {}
  for t in reader.tensors:
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape([int(n) for n in reversed(t.shape)])
    if t.name.endswith("attn_q.weight"):
      w = unpermute(w, cfg.num_heads)
    elif t.name.endswith("attn_k.weight"):
      w = unpermute(w, cfg.num_kv_heads)
    tensors[hf_name(t.name)] = w
  return cfg, to_params(tensors.__getitem__, cfg, str(path)), reader
