"""Loads a GGUF file: our parser, dequantized weights under their HF names, with what llama.cpp's
converter changed undone (the Q/K row interleaving of llama, the +1 on gemma's norm weights)."""

from __future__ import annotations

import math
import mmap
import pathlib
import re
import struct
from typing import Any, Callable, NamedTuple

import gguf
import numpy as np

from attractor_jax import config as config_lib
from attractor_jax.errors import InputError
from attractor_jax.weights.convert import to_params
from attractor_jax.weights.dequant import dequantize

_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GEMMA_BLOCK_NAMES = {  # norms both sides of each sublayer; ffn_norm is the one before the MLP
    **_BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# What llama.cpp's converter does to HF weights, by GGUF architecture: for llama it interleaves
# the Q/K rows (for its RoPE kernel; not for qwen2, qwen3 or gemma), and for gemma it writes
# every `*norm.weight` as 1 + w (HF's Gemma RMSNorm scales by 1 + w, llama.cpp's by w).
_PERMUTED_QK = ("llama",)
_GEMMA = ("gemma2", "gemma3")


class GGUFTensor(NamedTuple):
  name: str
  shape: tuple[int, ...]  # NumPy order (GGUF lists dimensions fastest first)
  qtype: gguf.GGMLQuantizationType
  data: np.ndarray  # raw bytes, [..., bytes per row], a view of the mapped file


class GGUFFile(NamedTuple):
  path: str
  metadata: dict[str, Any]  # key -> int, float, bool, str or list
  tensors: list[GGUFTensor]


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_gguf(path: str | pathlib.Path) -> GGUFFile:
  """Parses a GGUF (v2/v3, little-endian) file's metadata and tensor table; the tensor data
  stay mapped. A file that is not one raises InputError naming it.

  Our own parser: `gguf.GGUFReader` spent most of `aj.load()`'s time building a NumPy view
  for each of the vocabulary's 49k strings; this one reads them with `struct`.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise InputError(f"GGUF file {str(path)!r} does not exist: pass the path of a .gguf file")
  try:
    with open(path, "rb") as f:
      buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
    return _parse(buf, str(path))
  except (OSError, struct.error, ValueError, RecursionError) as e:
    raise InputError(f"{path} is not a readable GGUF file ({e!r}): pass a valid .gguf file") from None


def _parse(buf, path: str) -> GGUFFile:
  if buf[:4] != b"GGUF":
    raise ValueError("no GGUF magic number")
  version, n_tensors, n_fields = struct.unpack_from("<IQQ", buf, 4)
  if version not in (2, 3):
    endian = " (big-endian files are not supported)" if version & 0xFFFF == 0 else ""
    raise ValueError(f"GGUF version {version}{endian}; supported: 2, 3")
  offset = 24

  def take(n: int) -> int:  # the offset of the next n bytes, which must be in the file
    nonlocal offset
    if offset + n > len(buf):
      raise ValueError(f"truncated: {n} bytes wanted at offset {offset} of {len(buf)}")
    offset += n
    return offset - n

  def scalar(fmt):
    return struct.unpack_from(fmt, buf, take(struct.calcsize(fmt)))[0]

  def string():
    n = scalar("<Q")
    start = take(n)
    return bytes(buf[start:start + n]).decode("utf-8")

  def number_format(kind):
    if kind not in _SCALARS:
      raise ValueError(f"unknown value type {kind}")
    return _SCALARS[kind]

  def value(kind):
    if kind == _STRING:
      return string()
    if kind != _ARRAY:
      return scalar(number_format(kind))
    item_kind, n = scalar("<I"), scalar("<Q")
    if item_kind in (_STRING, _ARRAY):
      return [value(item_kind) for _ in range(n)]
    dtype = np.dtype(number_format(item_kind))
    return np.frombuffer(buf, dtype, n, take(n * dtype.itemsize)).tolist()

  metadata = {}
  for _ in range(n_fields):
    key = string()
    metadata[key] = value(scalar("<I"))
  table = []
  for _ in range(n_tensors):
    name, n_dims = string(), scalar("<I")
    if n_dims < 1:
      raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
    dims = [scalar("<Q") for _ in range(n_dims)]
    table.append((name, tuple(reversed(dims)), gguf.GGMLQuantizationType(scalar("<I")),
                  scalar("<Q")))
  alignment = metadata.get("general.alignment", 32)
  if type(alignment) is not int or alignment < 1 or alignment & (alignment - 1):
    raise ValueError(f"general.alignment={alignment!r} is not a power of two")
  data_start = -(-offset // alignment) * alignment
  tensors = []
  for name, shape, qtype, data_offset in table:
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
    offset = data_start + data_offset
    raw = np.frombuffer(buf, np.uint8, math.prod(byte_shape), take(math.prod(byte_shape)))
    tensors.append(GGUFTensor(name, shape, qtype, raw.reshape(byte_shape)))
  return GGUFFile(path, metadata, tensors)


def hf_name(gguf_name: str, arch: str) -> str:
  """Maps a GGUF tensor name of architecture `arch` to its HF name (blk.3.attn_q.weight ->
  model.layers.3.self_attn.q_proj.weight)."""
  m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if m:
    names = _GEMMA_BLOCK_NAMES if arch in _GEMMA else _BLOCK_NAMES
    return f"model.layers.{m[1]}.{names.get(m[2], m[2])}.{m[3]}"
  base, _, kind = gguf_name.rpartition(".")
  return f"{_GLOBAL_NAMES.get(base, base)}.{kind}"


def unpermute(w_OxI: np.ndarray, n_head: int) -> np.ndarray:
  """Undoes llama.cpp's interleaving of Q/K rows, back to HF's rotate-half layout."""
  half = w_OxI.shape[0] // n_head // 2
  return w_OxI.reshape(n_head, half, 2, *w_OxI.shape[1:]).swapaxes(1, 2).reshape(w_OxI.shape)


def hf_weights(file: GGUFFile) -> Callable[[str], np.ndarray]:
  """The file's tensors by HF name, as a getter: each is dequantized when asked for (float32),
  with llama.cpp's Q/K interleaving or norm +1 undone for the architectures that have them."""
  meta = file.metadata
  arch = meta.get("general.architecture")
  heads = meta.get(f"{arch}.attention.head_count")
  kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
  by_hf_name = {hf_name(t.name, arch): t for t in file.tensors}

  def get(name: str) -> np.ndarray:
    t = by_hf_name[name]
    w = dequantize(t.data, t.qtype).reshape(t.shape)
    if arch in _PERMUTED_QK and t.name.endswith(("attn_q.weight", "attn_k.weight")):
      w = unpermute(w, heads if "attn_q" in t.name else kv_heads)
    if arch in _GEMMA and t.name.endswith("norm.weight"):
      w = w - np.float32(1)
    return w

  return get


def load_gguf(path: str | pathlib.Path):
  """Returns (ModelConfig, params, GGUFFile) for a GGUF file."""
  file = read_gguf(path)
  names = {t.name for t in file.tensors}
  cfg = config_lib.from_gguf_metadata(file.metadata, has_output_tensor="output.weight" in names,
                                      name=str(path))
  return cfg, to_params(hf_weights(file), cfg, str(path)), file
